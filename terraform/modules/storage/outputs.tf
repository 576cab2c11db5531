output "images_bucket" {
  description = "Name of the images bucket (GCS_BUCKET)."
  value       = google_storage_bucket.images.name
}

output "models_bucket" {
  description = "Name of the model weights bucket."
  value       = google_storage_bucket.models.name
}
