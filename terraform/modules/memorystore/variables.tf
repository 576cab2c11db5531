variable "project_id" {
  description = "Project of the instance."
  type        = string
}

variable "region" {
  description = "Region of the instance (the services' region)."
  type        = string
}

variable "name" {
  description = "Instance id."
  type        = string
  default     = "txt2img"
}

variable "network_id" {
  description = "VPC the instance peers with (the Direct VPC egress network)."
  type        = string
}

variable "reserved_ip_range" {
  description = "/29 range the instance takes in the peered network (fixed, so that later subnets, e.g. GKE's, cannot collide with it)."
  type        = string
  default     = "10.9.0.0/29"
}

variable "tier" {
  description = "BASIC (one node, no SLA: staging) or STANDARD_HA (replica with automatic failover: prod)."
  type        = string
  default     = "STANDARD_HA"

  validation {
    condition     = contains(["BASIC", "STANDARD_HA"], var.tier)
    error_message = "tier must be BASIC or STANDARD_HA."
  }
}

variable "memory_size_gb" {
  description = "Memory of the instance in GiB."
  type        = number
  default     = 1

  validation {
    condition     = var.memory_size_gb >= 1
    error_message = "memory_size_gb must be at least 1."
  }
}

variable "redis_version" {
  description = "Redis version of the instance."
  type        = string
  default     = "REDIS_7_2"
}

variable "url_secret_id" {
  description = "Secret Manager id that receives the connection string (REDIS_URL)."
  type        = string
  default     = "txt2img-redis-url"
}

variable "url_accessor_members" {
  description = "Members that may read the connection string, keyed by a static label."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels put on the instance and the secret."
  type        = map(string)
  default     = {}
}
