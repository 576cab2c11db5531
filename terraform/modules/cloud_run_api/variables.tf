variable "project_id" {
  description = "Project of the service."
  type        = string
}

variable "region" {
  description = "Region of the service."
  type        = string
}

variable "name" {
  description = "Service name (the run.app URL is derived from it)."
  type        = string
  default     = "txt2img-api"
}

variable "image" {
  description = "Full image reference, e.g. REGION-docker.pkg.dev/PROJECT/txt2img/api:SHORT_SHA."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[^\\s/]+|@sha256:[0-9a-f]{64})$", var.image))
    error_message = "image must be a full reference with a tag or a digest."
  }
}

variable "service_account_email" {
  description = "Identity the service runs as (also the account that signs image URLs)."
  type        = string
}

variable "env" {
  description = "Plain environment variables (settings from dal/settings.py). HOST and GCS_SIGNING_SERVICE_ACCOUNT are set by the module; empty or null values are dropped."
  type        = map(string)
  default     = {}
}

variable "secret_env" {
  description = "Environment variables read from Secret Manager: NAME => { secret = SECRET_ID, version }."
  type = map(object({
    secret  = string
    version = optional(string, "latest")
  }))
  default = {}
}

variable "network" {
  description = "VPC for Direct VPC egress (Memorystore, Cloud SQL private IP)."
  type        = string
}

variable "subnetwork" {
  description = "Subnet for Direct VPC egress; each instance takes an address from it."
  type        = string
}

variable "cpu" {
  description = "CPU limit per instance."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory limit per instance."
  type        = string
  default     = "1Gi"
}

variable "concurrency" {
  description = "Requests one instance serves at once."
  type        = number
  default     = 80

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be between 1 and 1000."
  }
}

variable "request_timeout_seconds" {
  description = "Request timeout in seconds: longer than the longest-lived route (an events stream, EVENTS_STREAM_MAX_S; a `Prefer: wait` GET, PREFER_WAIT_MAX_S), or Cloud Run cuts them mid-answer."
  type        = number
  default     = 600

  validation {
    condition     = var.request_timeout_seconds >= 1 && var.request_timeout_seconds <= 3600
    error_message = "request_timeout_seconds must be between 1 and 3600."
  }
}

variable "min_instances" {
  description = "Instances kept warm (0: scale to zero, first request pays a cold start)."
  type        = number
  default     = 0

  validation {
    condition     = var.min_instances >= 0
    error_message = "min_instances cannot be negative."
  }
}

variable "max_instances" {
  description = "Upper bound on instances (bounds cost and the load on Firestore/Redis)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instances >= 1
    error_message = "max_instances must be at least 1."
  }
}

variable "allow_unauthenticated" {
  description = "Grant roles/run.invoker to allUsers: the API is public and checks API keys itself. false: only invoker_members may call it."
  type        = bool
  default     = true
}

variable "invoker_members" {
  description = "Extra members allowed to invoke the service, keyed by a static label (useful with allow_unauthenticated = false)."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Refuse to delete the service (turn off only to tear the environment down)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels put on the service and its revisions."
  type        = map(string)
  default     = {}
}

variable "outbox_sweep_schedule" {
  description = "Cron schedule (UTC) of the outbox sweep job (`txt2img-admin outbox sweep`), which publishes jobs an API instance recorded but died before publishing. The API's own background sweep runs only while an instance has CPU; this one runs whatever the traffic. Empty: no scheduled sweep."
  type        = string
  default     = "*/5 * * * *"
}

variable "scheduler_service_account_email" {
  description = "Identity Cloud Scheduler uses to start the outbox sweep job (granted roles/run.invoker on that job only). Required when outbox_sweep_schedule is set."
  type        = string
  default     = ""

  validation {
    condition     = var.scheduler_service_account_email != "" || var.outbox_sweep_schedule == ""
    error_message = "scheduler_service_account_email is required when outbox_sweep_schedule is set."
  }
}
