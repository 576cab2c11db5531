variable "project_id" {
  description = "Project of the service."
  type        = string
}

variable "region" {
  description = "Region of the service: one where Cloud Run offers NVIDIA L4 GPUs (see the validation)."
  type        = string

  # Cloud Run's GPU regions, from Google's list (read 2026-12-06):
  # https://cloud.google.com/run/docs/configuring/services/gpu#supported-regions and
  # https://cloud.google.com/run/docs/configuring/services/gpu-zonal-redundancy (the same list;
  # asia-south1 is by invitation only). A region outside it fails at plan time here rather
  # than at apply time with an opaque API error. Add a region when Google's page does.
  validation {
    condition     = contains(["us-central1", "europe-west1", "europe-west4", "asia-southeast1", "asia-south1"], var.region)
    error_message = "Cloud Run offers NVIDIA L4 GPUs only in us-central1, europe-west1, europe-west4, asia-southeast1 and (by invitation) asia-south1: https://cloud.google.com/run/docs/configuring/services/gpu#supported-regions"
  }
}

variable "name" {
  description = "Service name."
  type        = string
  default     = "txt2img-gpu-worker"
}

variable "image" {
  description = "Full image reference, e.g. REGION-docker.pkg.dev/PROJECT/txt2img/gpu-worker:SHORT_SHA."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[^\\s/]+|@sha256:[0-9a-f]{64})$", var.image))
    error_message = "image must be a full reference with a tag or a digest."
  }
}

variable "service_account_email" {
  description = "Identity the worker runs as (also the account that signs the image URLs in webhook bodies: it needs roles/iam.serviceAccountTokenCreator on itself)."
  type        = string
}

variable "push_service_account_email" {
  description = "The Pub/Sub push identity: the only member granted roles/run.invoker on the worker."
  type        = string
}

variable "env" {
  description = "Plain environment variables (settings from dal/settings.py). WORKER_HOST, MAX_BATCH_SIZE, MODEL_PATH, MODEL_ID and GCS_SIGNING_SERVICE_ACCOUNT are set by the module; empty or null values are dropped."
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
  description = "Subnet for Direct VPC egress."
  type        = string
}

variable "cpu" {
  description = "CPU limit per instance (Cloud Run GPUs need at least 4; 8 is recommended)."
  type        = string
  default     = "8"

  validation {
    condition     = tonumber(var.cpu) >= 4
    error_message = "An L4 instance needs at least 4 CPUs."
  }
}

variable "memory" {
  description = "Memory limit per instance (Cloud Run GPUs need at least 16Gi; 32Gi is recommended)."
  type        = string
  default     = "32Gi"

  validation {
    condition     = can(regex("^[0-9]+Gi$", var.memory)) && tonumber(trimsuffix(var.memory, "Gi")) >= 16
    error_message = "memory must be written in Gi and be at least 16Gi."
  }
}

variable "batch_size" {
  description = "Jobs one instance runs together on its GPU: both the request concurrency and MAX_BATCH_SIZE."
  type        = number
  default     = 8

  validation {
    condition     = var.batch_size >= 1 && var.batch_size <= 64
    error_message = "batch_size must be between 1 and 64 (MAX_BATCH_SIZE's range)."
  }
}

variable "request_timeout_seconds" {
  description = "Request timeout; at least the push subscription's ack deadline (600 s), or a running generation is cut and redelivered."
  type        = number
  default     = 900

  validation {
    condition     = var.request_timeout_seconds >= 600 && var.request_timeout_seconds <= 3600
    error_message = "request_timeout_seconds must be between 600 (the ack deadline) and 3600."
  }
}

variable "max_instances" {
  description = "Most GPU instances at once (bounded by the project's Cloud Run GPU quota)."
  type        = number
  default     = 3

  validation {
    condition     = var.max_instances >= 1
    error_message = "max_instances must be at least 1."
  }
}

variable "gpu_zonal_redundancy_disabled" {
  description = "true: best-effort failover, cheaper GPU seconds and a separate (easier) quota; false: capacity reserved for zonal failover."
  type        = bool
  default     = true
}

variable "mount_models_bucket" {
  description = "Mount models_bucket read-only at /models with Cloud Storage FUSE (MODEL_PATH=/models/MODEL_NAME), for large or often-swapped models. false (default): the weights are baked into the image at model_path."
  type        = bool
  default     = false
}

variable "models_bucket" {
  description = "Bucket with the diffusers model folders (mounted when mount_models_bucket is true)."
  type        = string
  default     = null
}

variable "models_mount_options" {
  description = "Cloud Storage FUSE mount options; implicit-dirs makes folders uploaded without directory objects visible."
  type        = list(string)
  default     = ["implicit-dirs"]
}

variable "model_name" {
  description = "Folder of the model inside the models bucket (MODEL_PATH=/models/MODEL_NAME)."
  type        = string
  default     = "stable-diffusion"
}

variable "model_path" {
  description = "MODEL_PATH when the weights are baked into the image (mount_models_bucket = false): gpu_worker/Dockerfile bakes them at /opt/model."
  type        = string
  default     = "/opt/model"
}

variable "model_id" {
  description = "MODEL_ID recorded on each job (default: the model folder's name)."
  type        = string
  default     = null
}

variable "startup_probe_initial_delay_seconds" {
  description = "Seconds before the first /readyz probe (up to 240); added to period x failures."
  type        = number
  default     = 60

  validation {
    condition     = var.startup_probe_initial_delay_seconds >= 0 && var.startup_probe_initial_delay_seconds <= 240
    error_message = "startup_probe_initial_delay_seconds must be between 0 and 240."
  }
}

variable "startup_probe_period_seconds" {
  description = "Seconds between /readyz probes while the model loads."
  type        = number
  default     = 10
}

variable "startup_probe_failure_threshold" {
  description = "Failed /readyz probes tolerated while the model loads and warms (period x failures must stay within 240 s)."
  type        = number
  default     = 24

  validation {
    condition     = var.startup_probe_failure_threshold >= 1
    error_message = "startup_probe_failure_threshold must be at least 1."
  }
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

variable "custom_audiences" {
  description = "Audiences besides its run.app URL that the service accepts in ID tokens: the audience the push subscriptions sign for (PUSH_AUDIENCE)."
  type        = list(string)
  default     = []
}
