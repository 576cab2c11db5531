variable "project_id" {
  description = "Project of the network."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run subnet (the services' region)."
  type        = string
}

variable "name" {
  description = "Name of the VPC; subnets and ranges are named after it."
  type        = string
  default     = "txt2img"
}

variable "subnet_cidr" {
  description = "Primary range of the Direct VPC egress subnet. Each Cloud Run instance takes an address; /24 serves about 100 instances across revisions (Google recommends /26 at least)."
  type        = string
  default     = "10.10.0.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0)) && tonumber(split("/", var.subnet_cidr)[1]) <= 26
    error_message = "subnet_cidr must be a CIDR block of /26 or larger."
  }
}

variable "flow_log_sampling" {
  description = "Share of flows recorded in VPC flow logs (0-1)."
  type        = number
  default     = 0.5

  validation {
    condition     = var.flow_log_sampling > 0 && var.flow_log_sampling <= 1
    error_message = "flow_log_sampling must be in (0, 1]."
  }
}

variable "private_services_access" {
  description = "Reserve a range and peer it with Google's service producer network (needed for Cloud SQL private IP)."
  type        = bool
  default     = false
}

variable "private_services_address" {
  description = "First address of the range reserved for private services access (fixed, so that later subnets cannot collide with it)."
  type        = string
  default     = "10.16.0.0"
}

variable "private_services_prefix_length" {
  description = "Size of the range reserved for private services access."
  type        = number
  default     = 20
}
