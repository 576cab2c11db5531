output "network_id" {
  description = "VPC id (projects/PROJECT/global/networks/NAME)."
  value       = google_compute_network.this.id
}

output "network_name" {
  description = "VPC name."
  value       = google_compute_network.this.name
}

output "subnetwork_id" {
  description = "Id of the subnet Cloud Run egresses through."
  value       = google_compute_subnetwork.run.id
}

output "subnetwork_name" {
  description = "Name of the subnet Cloud Run egresses through."
  value       = google_compute_subnetwork.run.name
}

output "private_services_connection" {
  description = "The private services access peering (null when disabled); Cloud SQL depends on it."
  value       = var.private_services_access ? google_service_networking_connection.private_services[0].id : null
}
