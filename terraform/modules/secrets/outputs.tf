output "secret_ids" {
  description = "Secret ids by key (e.g. api_key_pepper => txt2img-api-key-pepper)."
  value       = { for key, secret in google_secret_manager_secret.this : key => secret.secret_id }
}
