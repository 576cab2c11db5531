variable "project_id" {
  description = "Project of the environment this cluster extends (must equal its project_id output)."
  type        = string
}

variable "region" {
  description = "Region of the environment (must equal its region output); the cluster is regional."
  type        = string
}

variable "environment" {
  description = "Environment whose state is read (txt2img/ENVIRONMENT in state_bucket): staging or prod."
  type        = string
  default     = "staging"

  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment must be staging or prod."
  }
}

variable "state_bucket" {
  description = "Bucket that holds the environments' Terraform state."
  type        = string
}

variable "worker_image" {
  description = "GPU worker image, REGION-docker.pkg.dev/PROJECT/txt2img/gpu-worker:TAG."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[^\\s/]+|@sha256:[0-9a-f]{64})$", var.worker_image))
    error_message = "worker_image must be a full reference with a tag or a digest."
  }
}

variable "cluster_name" {
  description = "Name of the GKE cluster."
  type        = string
  default     = "txt2img"
}

variable "release_channel" {
  description = "GKE release channel (REGULAR or STABLE)."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "gpu_zones" {
  description = "Zones of the L4 node pool (g2 machines must exist there); null: REGION-a, -b and -c."
  type        = list(string)
  default     = null
}

variable "gpu_machine_type" {
  description = "Machine type of the GPU nodes (g2-standard-8: 1 L4, 8 vCPU, 32 GB)."
  type        = string
  default     = "g2-standard-8"

  validation {
    condition     = startswith(var.gpu_machine_type, "g2-")
    error_message = "L4 GPUs come with g2 machine types."
  }
}

variable "max_gpu_nodes" {
  description = "Most L4 nodes across the pool's zones (the pool's minimum is 0)."
  type        = number
  default     = 3

  validation {
    condition     = var.max_gpu_nodes >= 1
    error_message = "max_gpu_nodes must be at least 1."
  }
}

variable "gpu_spot" {
  description = "Use Spot VMs for the GPU nodes (much cheaper; preempted jobs are redelivered by Pub/Sub)."
  type        = bool
  default     = false
}

variable "system_machine_type" {
  description = "Machine type of the system pool (KEDA, the metrics adapter, GKE add-ons)."
  type        = string
  default     = "e2-standard-4"
}

variable "subnet_cidr" {
  description = "Primary range of the GKE node subnet (added to the environment's VPC)."
  type        = string
  default     = "10.20.0.0/22"
}

variable "pods_cidr" {
  description = "Secondary range of the pods."
  type        = string
  default     = "10.24.0.0/14"
}

variable "services_cidr" {
  description = "Secondary range of the Kubernetes services."
  type        = string
  default     = "10.28.0.0/20"
}

variable "master_ipv4_cidr_block" {
  description = "/28 of the private control plane endpoint."
  type        = string
  default     = "172.16.0.0/28"
}

variable "master_authorized_networks" {
  description = "CIDR blocks allowed to reach the control plane's public endpoint (kubectl). Empty: none but Google's and the VPC's."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []
}

variable "namespace" {
  description = "Kubernetes namespace of the worker."
  type        = string
  default     = "txt2img"
}

variable "batch_size" {
  description = "MAX_BATCH_SIZE of each worker (jobs batched on one GPU)."
  type        = number
  default     = 8
}

variable "pull_max_in_flight" {
  description = "PULL_MAX_IN_FLIGHT: messages one worker leases at once (keep it at most batch_size)."
  type        = number
  default     = 8

  validation {
    condition     = var.pull_max_in_flight >= 1 && var.pull_max_in_flight <= 64
    error_message = "pull_max_in_flight must be between 1 and 64."
  }
}

variable "messages_per_replica" {
  description = "Autoscaling target: undelivered messages per worker replica."
  type        = number
  default     = 8
}

variable "shutdown_grace_seconds" {
  description = "SHUTDOWN_GRACE_S: how long a stopping worker (scale-in, rollout, node drain) lets its running jobs finish; the pod's terminationGracePeriodSeconds adds 60 s."
  type        = number
  default     = 540
}

variable "mount_models_bucket" {
  description = "Mount the models bucket at /models through Cloud Storage FUSE (MODEL_PATH=/models/MODEL_NAME). false: the weights baked into the worker image (MODEL_PATH=model_path, or the image's /opt/model)."
  type        = bool
  default     = false
}

variable "model_name" {
  description = "Folder of the diffusers model in the models bucket (MODEL_PATH=/models/MODEL_NAME when mount_models_bucket is true)."
  type        = string
  default     = "stable-diffusion"
}

variable "model_path" {
  description = "MODEL_PATH inside the image when mount_models_bucket is false; null: the image's default, /opt/model."
  type        = string
  default     = null
}

variable "autoscaler" {
  description = "What scales the worker Deployment, rendered as autoscaling_manifest: keda (ScaledObject, 0..max_gpu_nodes) or hpa (HPA on the Custom Metrics Stackdriver Adapter, 1..max_gpu_nodes)."
  type        = string
  default     = "keda"

  validation {
    condition     = contains(["keda", "hpa"], var.autoscaler)
    error_message = "autoscaler must be keda or hpa."
  }
}

variable "keda_version" {
  description = "KEDA Helm chart version the README's install command uses (informational, shown in outputs)."
  type        = string
  default     = "2.16.1"
}

variable "deletion_protection" {
  description = "Refuse to delete the cluster (turn off only to tear down)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Extra labels put on the cluster and nodes."
  type        = map(string)
  default     = {}
}
