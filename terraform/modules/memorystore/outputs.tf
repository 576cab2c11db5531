output "host" {
  description = "Private IP address of the instance."
  value       = google_redis_instance.this.host
}

output "port" {
  description = "Port of the instance."
  value       = google_redis_instance.this.port
}

output "url_secret_id" {
  description = "Secret Manager id of the connection string (mounted as REDIS_URL)."
  value       = google_secret_manager_secret.redis_url.secret_id
}
