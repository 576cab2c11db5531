# Two private buckets: generated images (short-lived, served through V4 signed URLs) and model
# weights (read by the GPU worker through a Cloud Storage volume mount).
resource "google_storage_bucket" "images" {
  # checkov:skip=CKV_GCP_62: access is audited through Cloud Audit Logs (Data Access); usage-log buckets are a legacy mechanism Google discourages for new setups.
  # checkov:skip=CKV_GCP_78: versioning is off on purpose: images are regenerable outputs deleted by lifecycle after image_retention_days; old versions would outlive that promise.
  project                     = var.project_id
  name                        = var.images_bucket_name
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = false
  }

  # Generated images are deleted image_retention_days after they are written.
  lifecycle_rule {
    condition {
      age = var.image_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  soft_delete_policy {
    retention_duration_seconds = var.images_soft_delete_seconds
  }

  # Browsers that fetch images from signed URLs with fetch()/XHR (not <img>) need CORS.
  dynamic "cors" {
    for_each = length(var.cors_origins) > 0 ? [1] : []
    content {
      origin          = var.cors_origins
      method          = ["GET", "HEAD"]
      response_header = ["Content-Type", "Content-Length", "ETag"]
      max_age_seconds = 3600
    }
  }
}

resource "google_storage_bucket" "models" {
  # checkov:skip=CKV_GCP_62: access is audited through Cloud Audit Logs (Data Access); usage-log buckets are a legacy mechanism Google discourages for new setups.
  project                     = var.project_id
  name                        = var.models_bucket_name
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  # Weights are versioned so that a bad upload can be rolled back ...
  versioning {
    enabled = true
  }

  # ... and replaced versions are deleted after a while.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.model_noncurrent_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}

resource "google_storage_bucket_iam_member" "images" {
  for_each = var.images_iam_members

  bucket = google_storage_bucket.images.name
  role   = each.value.role
  member = each.value.member
}

resource "google_storage_bucket_iam_member" "models" {
  for_each = var.models_iam_members

  bucket = google_storage_bucket.models.name
  role   = each.value.role
  member = each.value.member
}
