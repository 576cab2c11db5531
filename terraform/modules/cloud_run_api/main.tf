# The public HTTPS API (python -m api): CPU only, scales on requests, reaches Memorystore (and
# Cloud SQL) through Direct VPC egress. HTTPS comes with the run.app URL.
locals {
  # Settings the module owns; var.env brings the rest (names from dal/settings.py).
  module_env = {
    HOST = "0.0.0.0"
    # V4 signed URLs are signed through IAM signBlob as the service's own account.
    GCS_SIGNING_SERVICE_ACCOUNT = var.service_account_email
  }

  env = { for name, value in merge(var.env, local.module_env) : name => value if value != null && value != "" }

  outbox_sweep = var.outbox_sweep_schedule != ""
}

resource "google_cloud_run_v2_service" "api" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  description         = "txt2img public API"
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection
  labels              = var.labels

  template {
    service_account                  = var.service_account_email
    max_instance_request_concurrency = var.concurrency
    timeout                          = "${var.request_timeout_seconds}s"
    labels                           = var.labels

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = var.network
        subnetwork = var.subnetwork
      }
    }

    containers {
      name  = "api"
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value.secret
              version = env.value.version
            }
          }
        }
      }

      # Traffic only once the stores answer: a revision that cannot reach them never serves.
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 5
        timeout_seconds       = 3
        failure_threshold     = 24
        http_get {
          path = "/readyz"
          port = 8080
        }
      }

      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }
}

# A public API authenticates its callers itself (API keys); Cloud Run IAM lets everyone in.
resource "google_cloud_run_v2_service_iam_member" "public" {
  count = var.allow_unauthenticated ? 1 : 0

  project  = var.project_id
  location = google_cloud_run_v2_service.api.location
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_v2_service_iam_member" "invokers" {
  for_each = var.invoker_members

  project  = var.project_id
  location = google_cloud_run_v2_service.api.location
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = each.value
}

# The outbox sweep as a Cloud Run job on a schedule: the same image, settings and identity as
# the service, running `txt2img-admin outbox sweep` (docs/operations.md, "Outbox"). The API's
# background sweep needs an instance with CPU, which a scaled-to-zero, request-throttled
# service does not have; this one runs every few minutes regardless.
resource "google_cloud_run_v2_job" "outbox_sweep" {
  count = local.outbox_sweep ? 1 : 0

  project             = var.project_id
  name                = "${var.name}-outbox-sweep"
  location            = var.region
  deletion_protection = var.deletion_protection
  labels              = var.labels

  template {
    labels      = var.labels
    task_count  = 1
    parallelism = 1

    template {
      service_account = var.service_account_email
      # The next scheduled run is the retry; a sweep is idempotent.
      max_retries = 0
      timeout     = "300s"

      vpc_access {
        egress = "PRIVATE_RANGES_ONLY"
        network_interfaces {
          network    = var.network
          subnetwork = var.subnetwork
        }
      }

      containers {
        name    = "outbox-sweep"
        image   = var.image
        command = ["txt2img-admin"]
        args    = ["outbox", "sweep"]

        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }

        dynamic "env" {
          for_each = local.env
          content {
            name  = env.key
            value = env.value
          }
        }

        dynamic "env" {
          for_each = var.secret_env
          content {
            name = env.key
            value_source {
              secret_key_ref {
                secret  = env.value.secret
                version = env.value.version
              }
            }
          }
        }
      }
    }
  }
}

resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_outbox_sweep" {
  count = local.outbox_sweep ? 1 : 0

  project  = var.project_id
  location = google_cloud_run_v2_job.outbox_sweep[0].location
  name     = google_cloud_run_v2_job.outbox_sweep[0].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.scheduler_service_account_email}"
}

resource "google_cloud_scheduler_job" "outbox_sweep" {
  count = local.outbox_sweep ? 1 : 0

  project          = var.project_id
  region           = var.region
  name             = "${var.name}-outbox-sweep"
  description      = "Publishes jobs recorded without a message (txt2img-admin outbox sweep)."
  schedule         = var.outbox_sweep_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${google_cloud_run_v2_job.outbox_sweep[0].name}:run"

    # A Google API, not a Cloud Run URL: an OAuth access token, not an OIDC identity token.
    oauth_token {
      service_account_email = var.scheduler_service_account_email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler_runs_outbox_sweep]
}
