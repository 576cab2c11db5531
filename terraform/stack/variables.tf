variable "project_id" {
  description = "Google Cloud project of this environment (one project per environment)."
  type        = string
}

variable "region" {
  description = "Region of every regional resource. With worker_platform = cloud_run it must offer Cloud Run GPUs (NVIDIA L4): us-central1, europe-west1, europe-west4, asia-southeast1 (modules/cloud_run_worker checks it). us-central1: GA for Cloud Run L4, low CO2."
  type        = string
  default     = "us-central1"
}

variable "environment" {
  description = "APP_ENV of the services: staging or prod (set by environments/ENV.tfvars)."
  type        = string

  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment must be staging or prod."
  }
}

variable "api_image" {
  description = "API image, REGION-docker.pkg.dev/PROJECT/txt2img/api:TAG (Cloud Build sets it with $SHORT_SHA)."
  type        = string
}

variable "worker_image" {
  description = "GPU worker image, REGION-docker.pkg.dev/PROJECT/txt2img/gpu-worker:TAG (Cloud Build sets it with $SHORT_SHA)."
  type        = string
}

variable "worker_platform" {
  description = "Where the GPU worker runs: cloud_run (push) or gke (pull subscriptions for terraform/gke; no Cloud Run worker)."
  type        = string
  default     = "cloud_run"

  validation {
    condition     = contains(["cloud_run", "gke"], var.worker_platform)
    error_message = "worker_platform must be cloud_run or gke."
  }
}

variable "use_cloud_sql" {
  description = "Keep jobs in Cloud SQL for PostgreSQL (JOB_STORE=sql) instead of Firestore."
  type        = bool
  default     = false
}

variable "allow_unauthenticated" {
  description = "Let anyone reach the API (it authenticates API keys itself); false puts it behind Cloud Run IAM."
  type        = bool
  default     = true
}

variable "api_min_instances" {
  description = "API instances kept warm (0: scale to zero)."
  type        = number
  default     = 1
}

variable "api_max_instances" {
  description = "Most API instances."
  type        = number
  default     = 20
}

variable "worker_max_instances" {
  description = "Most GPU worker instances (within the project's Cloud Run L4 quota)."
  type        = number
  default     = 5
}

variable "worker_cpu" {
  description = "CPUs per GPU worker instance (at least 4)."
  type        = string
  default     = "8"
}

variable "worker_memory" {
  description = "Memory per GPU worker instance (at least 16Gi)."
  type        = string
  default     = "32Gi"
}

variable "batch_size" {
  description = "Jobs a GPU instance runs together: the worker's request concurrency and MAX_BATCH_SIZE."
  type        = number
  default     = 8
}

variable "dispatch_capacity" {
  description = "DISPATCH_CAPACITY: jobs handed to the GPUs at once, the rest waiting in fair order. 0: worker_max_instances x 2 x batch_size (a batch running and the next one waiting, on every instance). Set it with worker_platform = \"gke\": max_gpu_nodes x 2 x batch_size of the GKE root."
  type        = number
  default     = 0

  validation {
    condition     = var.dispatch_capacity >= 0 && floor(var.dispatch_capacity) == var.dispatch_capacity
    error_message = "dispatch_capacity must be a whole number, 0 for the default."
  }
}

variable "worker_request_timeout_seconds" {
  description = "GPU worker request timeout; at least ack_deadline_seconds."
  type        = number
  default     = 900
}

variable "ack_deadline_seconds" {
  description = "Ack deadline of the jobs subscriptions (the push request timeout)."
  type        = number
  default     = 600
}

variable "gpu_zonal_redundancy_disabled" {
  description = "Turn GPU zonal redundancy off (cheaper, separate quota, best-effort failover)."
  type        = bool
  default     = true
}

variable "push_audience" {
  description = "Audience of the push OIDC tokens (PUSH_AUDIENCE), set on the subscriptions and the services."
  type        = string
  default     = "txt2img-worker-push"
}

variable "max_delivery_attempts" {
  description = "Deliveries before a job's message is dead-lettered (MAX_DELIVERY_ATTEMPTS, 5-100); with delivery_minimum_backoff_seconds it must outlast a worker cold start."
  type        = number
  default     = 5
}

variable "delivery_minimum_backoff_seconds" {
  description = "Shortest wait between two deliveries of one job's message (0-600). A push refused while the GPU worker starts from zero (429 over max instances) is a delivery attempt: (max_delivery_attempts - 1) x this must outlast a cold start, or bursts are dead-lettered while the first instance loads its model."
  type        = number
  default     = 90

  validation {
    condition     = var.delivery_minimum_backoff_seconds >= 0 && var.delivery_minimum_backoff_seconds <= 600
    error_message = "delivery_minimum_backoff_seconds must be between 0 and 600."
  }
}

variable "image_retention_days" {
  description = "Generated images are deleted after this many days."
  type        = number
  default     = 30
}

variable "cors_origins" {
  description = "Origins allowed to fetch images from signed URLs with JavaScript."
  type        = list(string)
  default     = []
}

variable "mount_models_bucket" {
  description = "false (default): the worker loads the weights baked into its image at model_path (cloudbuild.yaml bakes them from the models bucket), as Google's Cloud Run GPU best practices recommend for a model of this size. true: mount the models bucket at /models with Cloud Storage FUSE (MODEL_PATH=/models/MODEL_NAME), which does not parallelise the download: for large or often-swapped models (docs/deploy-cloud-run.md, \"The model\")."
  type        = bool
  default     = false
}

variable "model_name" {
  description = "Folder of the diffusers model in the models bucket (MODEL_PATH=/models/MODEL_NAME)."
  type        = string
  default     = "stable-diffusion"
}

variable "model_path" {
  description = "MODEL_PATH when mount_models_bucket is false: where gpu_worker/Dockerfile bakes the model."
  type        = string
  default     = "/opt/model"
}

variable "model_id" {
  description = "MODEL_ID recorded on jobs (default: the model folder's name)."
  type        = string
  default     = null
}

variable "firestore_location" {
  description = "Firestore location (region or multi-region such as nam5); null: the region. Immutable."
  type        = string
  default     = null
}

variable "firestore_collection_prefix" {
  description = "FIRESTORE_COLLECTION_PREFIX: prefix of the collection names."
  type        = string
  default     = ""
}

variable "redis_tier" {
  description = "Memorystore tier: BASIC or STANDARD_HA."
  type        = string
  default     = "STANDARD_HA"
}

variable "redis_memory_size_gb" {
  description = "Memorystore size in GiB."
  type        = number
  default     = 1
}

variable "cloud_sql_tier" {
  description = "Cloud SQL machine tier (with use_cloud_sql)."
  type        = string
  default     = "db-custom-2-7680"
}

variable "cloud_sql_availability_type" {
  description = "Cloud SQL availability: ZONAL or REGIONAL (with use_cloud_sql)."
  type        = string
  default     = "REGIONAL"
}

variable "bootstrap_api_key_enabled" {
  description = "Mount the txt2img-bootstrap-api-key secret as BOOTSTRAP_API_KEY (add a version first)."
  type        = bool
  default     = false
}

variable "subnet_cidr" {
  description = "Range of the Direct VPC egress subnet."
  type        = string
  default     = "10.10.0.0/24"
}

variable "log_level" {
  description = "LOG_LEVEL of the services: debug, info, warning or error."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warning", "error"], var.log_level)
    error_message = "log_level must be debug, info, warning or error."
  }
}

variable "grant_build_deploy_roles" {
  description = "Give the build service account the project roles it needs to run terraform apply from Cloud Build."
  type        = bool
  default     = true
}

variable "additional_deployers" {
  description = "Other identities allowed to run terraform apply here, keyed by a static label, e.g. { staging_build = \"serviceAccount:txt2img-build@STAGING_PROJECT.iam.gserviceaccount.com\" } when staging's Cloud Build deploys prod."
  type        = map(string)
  default     = {}
}

variable "artifact_registry_readers" {
  description = "Members that may pull this project's images, keyed by a static label, e.g. prod's Cloud Run service agent { prod_run = \"serviceAccount:service-PROD_NUMBER@serverless-robot-prod.iam.gserviceaccount.com\" }."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Protect the services and the databases from deletion; set false only to tear down."
  type        = bool
  default     = true
}

variable "force_destroy_buckets" {
  description = "Let terraform destroy delete non-empty buckets; set true only to tear down."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Extra labels put on every labelled resource."
  type        = map(string)
  default     = {}
}

variable "outbox_sweep_schedule" {
  description = "Cron schedule (UTC) of the outbox sweep job; empty turns it off (docs/operations.md, \"Outbox\")."
  type        = string
  default     = "*/5 * * * *"
}

variable "quota_max_in_flight" {
  description = "Jobs one API key owner may have queued or running at once (QUOTA_MAX_IN_FLIGHT; 0: no limit). Per-key overrides: txt2img-admin keys create --max-in-flight."
  type        = number
  default     = 20

  validation {
    condition     = var.quota_max_in_flight >= 0
    error_message = "quota_max_in_flight cannot be negative."
  }
}

variable "quota_images_per_day" {
  description = "Images one API key owner's accepted jobs may ask for per UTC day (QUOTA_IMAGES_PER_DAY; 0: no limit). Per-key overrides: txt2img-admin keys create --images-per-day."
  type        = number
  default     = 1000

  validation {
    condition     = var.quota_images_per_day >= 0
    error_message = "quota_images_per_day cannot be negative."
  }
}
