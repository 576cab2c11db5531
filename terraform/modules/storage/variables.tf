variable "project_id" {
  description = "Project of the buckets."
  type        = string
}

variable "location" {
  description = "Bucket location; use the services' region so reads and writes stay regional."
  type        = string
}

variable "images_bucket_name" {
  description = "Globally unique name of the images bucket (GCS_BUCKET)."
  type        = string
}

variable "models_bucket_name" {
  description = "Globally unique name of the model weights bucket."
  type        = string
}

variable "image_retention_days" {
  description = "Generated images are deleted this many days after they were written."
  type        = number
  default     = 30

  validation {
    condition     = var.image_retention_days >= 1
    error_message = "image_retention_days must be at least 1."
  }
}

variable "images_soft_delete_seconds" {
  description = "Soft-delete retention of the images bucket in seconds (0 turns it off: deleted images are gone at once)."
  type        = number
  default     = 0

  validation {
    condition     = var.images_soft_delete_seconds == 0 || (var.images_soft_delete_seconds >= 604800 && var.images_soft_delete_seconds <= 7776000)
    error_message = "images_soft_delete_seconds must be 0 or between 7 and 90 days."
  }
}

variable "model_noncurrent_retention_days" {
  description = "Replaced versions of model files are deleted after this many days."
  type        = number
  default     = 30
}

variable "cors_origins" {
  description = "Origins allowed to fetch images with JavaScript (e.g. the web page's origin). Empty: no CORS policy."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for origin in var.cors_origins : origin != "*"])
    error_message = "cors_origins must name origins; \"*\" is not allowed."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete buckets that still hold objects. Keep false except when tearing down."
  type        = bool
  default     = false
}

variable "images_iam_members" {
  description = "Grants on the images bucket, keyed by a static label: { key = { role, member } }."
  type = map(object({
    role   = string
    member = string
  }))
  default = {}
}

variable "models_iam_members" {
  description = "Grants on the models bucket, keyed by a static label: { key = { role, member } }."
  type = map(object({
    role   = string
    member = string
  }))
  default = {}
}

variable "labels" {
  description = "Labels put on both buckets."
  type        = map(string)
  default     = {}
}
