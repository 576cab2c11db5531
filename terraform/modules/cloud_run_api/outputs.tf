output "name" {
  description = "Service name."
  value       = google_cloud_run_v2_service.api.name
}

output "url" {
  description = "HTTPS URL of the API (run.app)."
  value       = google_cloud_run_v2_service.api.uri
}

output "outbox_sweep_job" {
  description = "Name of the scheduled outbox sweep job (null when outbox_sweep_schedule is empty)."
  value       = local.outbox_sweep ? google_cloud_run_v2_job.outbox_sweep[0].name : null
}
