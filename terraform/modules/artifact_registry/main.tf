# The Docker repository the api and gpu-worker images are pushed to:
# ${region}-docker.pkg.dev/${project}/${repository_id}/{api,gpu-worker}:${tag}
resource "google_artifact_registry_repository" "this" {
  # checkov:skip=CKV_GCP_84: the images hold no secrets or user data (weights come from the models bucket); Google-managed encryption, no CMEK key to operate.
  project       = var.project_id
  location      = var.region
  repository_id = var.repository_id
  description   = "txt2img container images (api, gpu-worker)"
  format        = "DOCKER"
  labels        = var.labels

  docker_config {
    immutable_tags = var.immutable_tags
  }

  cleanup_policy_dry_run = false

  # Keep the most recent versions of every image (rollbacks), delete the rest once they are old.
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"

    most_recent_versions {
      keep_count = var.keep_recent_versions
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"

    condition {
      tag_state  = "ANY"
      older_than = "${var.delete_older_than_days * 86400}s"
    }
  }
}

resource "google_artifact_registry_repository_iam_member" "writers" {
  for_each = var.writer_members

  project    = var.project_id
  location   = google_artifact_registry_repository.this.location
  repository = google_artifact_registry_repository.this.name
  role       = "roles/artifactregistry.writer"
  member     = each.value
}

resource "google_artifact_registry_repository_iam_member" "readers" {
  for_each = var.reader_members

  project    = var.project_id
  location   = google_artifact_registry_repository.this.location
  repository = google_artifact_registry_repository.this.name
  role       = "roles/artifactregistry.reader"
  member     = each.value
}
