output "name" {
  description = "Service name."
  value       = google_cloud_run_v2_service.worker.name
}

output "url" {
  description = "HTTPS URL of the worker (push endpoints are URL/pubsub/push and URL/pubsub/dead-letter)."
  value       = google_cloud_run_v2_service.worker.uri
}
