# The job store's database (Firestore in native mode) and the composite indexes its queries
# need; they mirror firestore.indexes.json at the repository root (a test keeps them equal).
resource "google_firestore_database" "this" {
  project                           = var.project_id
  name                              = var.database_name
  location_id                       = var.location
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "PESSIMISTIC"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = var.point_in_time_recovery ? "POINT_IN_TIME_RECOVERY_ENABLED" : "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = "DELETE"
}

# GET /v1/jobs: an owner's jobs, newest first (cursor on created_at, then the document name).
resource "google_firestore_index" "jobs_by_owner" {
  project     = var.project_id
  database    = google_firestore_database.this.name
  collection  = "${var.collection_prefix}jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "DESCENDING"
  }
}

# Jobs in a status, oldest first (re-enqueueing queued jobs, failing abandoned running ones).
resource "google_firestore_index" "jobs_by_status" {
  project     = var.project_id
  database    = google_firestore_database.this.name
  collection  = "${var.collection_prefix}jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
}

# Quota: an owner's jobs queued or running (count aggregation).
resource "google_firestore_index" "jobs_in_flight_by_owner" {
  project     = var.project_id
  database    = google_firestore_database.this.name
  collection  = "${var.collection_prefix}jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
}

# Quota: the images of an owner's jobs since 00:00 UTC (sum aggregation).
resource "google_firestore_index" "jobs_images_by_owner" {
  project     = var.project_id
  database    = google_firestore_database.this.name
  collection  = "${var.collection_prefix}jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
  fields {
    field_path = "num_images"
    order      = "ASCENDING"
  }
}

# Quota: the same for jobs failed enqueue_failed, which are not charged.
resource "google_firestore_index" "jobs_unqueued_images_by_owner" {
  project     = var.project_id
  database    = google_firestore_database.this.name
  collection  = "${var.collection_prefix}jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "error.code"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
  fields {
    field_path = "num_images"
    order      = "ASCENDING"
  }
}

# Outbox sweeper: queued jobs never marked enqueued, oldest first.
resource "google_firestore_index" "jobs_unenqueued" {
  project     = var.project_id
  database    = google_firestore_database.this.name
  collection  = "${var.collection_prefix}jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "enqueued_at"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
}

# Webhook redrive: finished jobs whose webhook may still be owed, oldest first.
resource "google_firestore_index" "jobs_webhooks_owed" {
  project     = var.project_id
  database    = google_firestore_database.this.name
  collection  = "${var.collection_prefix}jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "webhook_delivered"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
}

# `txt2img-admin keys list --owner`: an owner's keys, oldest first.
resource "google_firestore_index" "api_keys_by_owner" {
  project     = var.project_id
  database    = google_firestore_database.this.name
  collection  = "${var.collection_prefix}api_keys"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
}

# Job params and image refs are never queried: no single-field indexes for them (cheaper
# writes, and no index-entry limits on large maps).
resource "google_firestore_field" "jobs_unindexed" {
  for_each = toset(["params", "images"])

  project    = var.project_id
  database   = google_firestore_database.this.name
  collection = "${var.collection_prefix}jobs"
  field      = each.value

  index_config {}
}
