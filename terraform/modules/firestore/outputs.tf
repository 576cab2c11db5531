output "database" {
  description = "Database id (FIRESTORE_DATABASE)."
  value       = google_firestore_database.this.name
}

output "collection_prefix" {
  description = "Collection prefix (FIRESTORE_COLLECTION_PREFIX)."
  value       = var.collection_prefix
}
