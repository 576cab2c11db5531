variable "project_id" {
  description = "Project of the instance."
  type        = string
}

variable "region" {
  description = "Region of the instance (the services' region)."
  type        = string
}

variable "name" {
  description = "Instance name (cannot be reused for about a week after deletion)."
  type        = string
  default     = "txt2img"
}

variable "network_id" {
  description = "VPC with private services access; the instance gets a private IP in it and no public IP."
  type        = string
}

variable "tier" {
  description = "Machine tier (e.g. db-custom-2-7680)."
  type        = string
  default     = "db-custom-2-7680"
}

variable "availability_type" {
  description = "ZONAL (staging) or REGIONAL (standby in another zone with automatic failover: prod)."
  type        = string
  default     = "REGIONAL"

  validation {
    condition     = contains(["ZONAL", "REGIONAL"], var.availability_type)
    error_message = "availability_type must be ZONAL or REGIONAL."
  }
}

variable "disk_size_gb" {
  description = "Initial disk size in GB (grows automatically)."
  type        = number
  default     = 20
}

variable "retained_backups" {
  description = "Number of daily automated backups kept."
  type        = number
  default     = 14
}

variable "database_name" {
  description = "Database the service uses."
  type        = string
  default     = "txt2img"
}

variable "user_name" {
  description = "Built-in database user the services connect as (its password is generated)."
  type        = string
  default     = "txt2img"
}

variable "url_secret_id" {
  description = "Secret Manager id that holds DATABASE_URL (its value is added out of band)."
  type        = string
  default     = "txt2img-database-url"
}

variable "url_accessor_members" {
  description = "Members that may read DATABASE_URL, keyed by a static label."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (turn off only to tear the environment down)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels put on the instance and the secret."
  type        = map(string)
  default     = {}
}
