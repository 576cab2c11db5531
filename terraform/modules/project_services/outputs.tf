output "services" {
  description = "The enabled services (use in depends_on so resources wait for their API)."
  value       = [for service in google_project_service.this : service.service]
}
