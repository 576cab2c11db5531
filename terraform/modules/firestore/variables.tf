variable "project_id" {
  description = "Project of the database."
  type        = string
}

variable "location" {
  description = "Firestore location: a region (e.g. us-central1, same as the services) or a multi-region (nam5, eur3). Cannot change later."
  type        = string
}

variable "database_name" {
  description = "Database id (FIRESTORE_DATABASE). \"(default)\" unless the project already uses it for something else."
  type        = string
  default     = "(default)"
}

variable "collection_prefix" {
  description = "Prefix of the collection names (FIRESTORE_COLLECTION_PREFIX); the indexes are created on the prefixed collections."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]*$", var.collection_prefix))
    error_message = "collection_prefix may contain letters, digits, '_' and '-' only."
  }
}

variable "point_in_time_recovery" {
  description = "Keep 7 days of point-in-time recovery."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Refuse to delete the database (turn off only to tear the environment down)."
  type        = bool
  default     = true
}
