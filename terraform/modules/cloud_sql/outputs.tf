output "instance_name" {
  description = "Instance name (gcloud sql connect, backups)."
  value       = google_sql_database_instance.this.name
}

output "private_ip_address" {
  description = "Private IP address the services connect to."
  value       = google_sql_database_instance.this.private_ip_address
}

output "database_name" {
  description = "Database the service uses."
  value       = google_sql_database.this.name
}

output "url_secret_id" {
  description = "Secret Manager id of DATABASE_URL."
  value       = google_secret_manager_secret.database_url.secret_id
}
