# Optional PostgreSQL job store (JOB_STORE=sql). Private IP only, TLS required, automated
# backups with point-in-time recovery, deletion protection. The application user and its
# password are created out of band and the connection string is stored in the secret below, so
# no password passes through Terraform (see README.md).
resource "google_sql_database_instance" "this" {
  # checkov:skip=CKV_GCP_6: ssl_mode = ENCRYPTED_ONLY refuses unencrypted connections; checkov only accepts TRUSTED_CLIENT_CERTIFICATE_REQUIRED, which would need client certificates in every container.
  # checkov:skip=CKV_GCP_79: PostgreSQL 15 is the version the service's migrations and tests run against (the local and CI PostgreSQL is 15); upgrade deliberately.
  # checkov:skip=CKV2_GCP_13: log_duration logs every statement's duration (the job store issues many small queries); Query Insights records latencies instead.
  project             = var.project_id
  name                = var.name
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = var.deletion_protection

  settings {
    tier                        = var.tier
    edition                     = "ENTERPRISE"
    availability_type           = var.availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection
    user_labels                 = var.labels

    ip_configuration {
      ipv4_enabled                                  = false
      private_network                               = var.network_id
      ssl_mode                                      = "ENCRYPTED_ONLY"
      enable_private_path_for_google_cloud_services = true
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "03:00"
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = var.retained_backups
      }
    }

    maintenance_window {
      day          = 7
      hour         = 4
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = false
      record_client_address   = false
    }

    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
  }
}

resource "google_sql_database" "this" {
  project  = var.project_id
  instance = google_sql_database_instance.this.name
  name     = var.database_name
}

# DATABASE_URL (postgresql+psycopg://USER:PASSWORD@PRIVATE_IP:5432/DB?sslmode=require) is added
# as a version of this secret by the operator after creating the user.
resource "google_secret_manager_secret" "database_url" {
  project   = var.project_id
  secret_id = var.url_secret_id
  labels    = var.labels

  replication {
    auto {}
  }
}

# The services' database user and the DATABASE_URL they read, written by the same apply that
# creates the instance: Cloud Run refuses to start a revision whose secret has no version, so a
# password added by hand afterwards would fail the first full apply. The password is in
# Terraform state (like the Redis AUTH string): the state bucket is private and versioned.
resource "random_password" "app" {
  length  = 32
  special = false
}

resource "google_sql_user" "app" {
  project  = var.project_id
  instance = google_sql_database_instance.this.name
  name     = var.user_name
  password = random_password.app.result
}

resource "google_secret_manager_secret_version" "database_url" {
  secret      = google_secret_manager_secret.database_url.id
  secret_data = "postgresql+psycopg://${google_sql_user.app.name}:${random_password.app.result}@${google_sql_database_instance.this.private_ip_address}:5432/${google_sql_database.this.name}?sslmode=require"
}

resource "google_secret_manager_secret_iam_member" "database_url_accessors" {
  for_each = var.url_accessor_members

  project   = var.project_id
  secret_id = google_secret_manager_secret.database_url.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
