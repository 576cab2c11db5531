output "repository" {
  description = "Repository name (the last path segment of image references)."
  value       = google_artifact_registry_repository.this.name
}

output "repository_url" {
  description = "Image prefix: REGION-docker.pkg.dev/PROJECT/REPOSITORY."
  value       = "${google_artifact_registry_repository.this.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.this.repository_id}"
}
