# The third cycle: the GPU worker on GKE, pulling jobs (python -m gpu_worker --pull) instead of
# receiving pushes. A regional Standard cluster in the environment's VPC, with a small system
# pool and an NVIDIA L4 pool that scales to zero; Workload Identity maps the worker's
# Kubernetes service account to the environment's worker service account; KEDA scales the
# Deployment on the pull subscription's backlog, down to zero pods and so zero GPU nodes.
#
# Kubernetes objects are rendered from manifests/ (outputs worker_manifest and
# autoscaling_manifest, which is keda_manifest or hpa_manifest) and applied with kubectl by
# deploy.sh, which Cloud Build runs after applying the environment: see README.md.
provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

# Everything the worker needs from the environment (topics, buckets, accounts, secrets, VPC).
data "terraform_remote_state" "env" {
  backend = "gcs"
  config = {
    bucket = var.state_bucket
    prefix = "txt2img/${var.environment}"
  }
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  env = data.terraform_remote_state.env.outputs

  base_labels = {
    app         = "txt2img"
    environment = var.environment
    managed-by  = "terraform"
  }
  labels = merge(var.labels, local.base_labels)

  gpu_zones         = var.gpu_zones != null ? var.gpu_zones : [for zone in ["a", "b", "c"] : "${var.region}-${zone}"]
  workload_pool     = "${var.project_id}.svc.id.goog"
  principal_prefix  = "principal://iam.googleapis.com/projects/${data.google_project.this.number}/locations/global/workloadIdentityPools/${local.workload_pool}/subject"
  worker_ksa        = "gpu-worker"
  worker_principal  = "${local.principal_prefix}/ns/${var.namespace}/sa/${local.worker_ksa}"
  secrets_mount_dir = "/var/run/secrets/txt2img"

  # Environment variable => the Secret Manager secret it is read from.
  secret_env_always = {
    API_KEY_PEPPER         = local.env.secret_ids["api_key_pepper"]
    URL_SIGNING_SECRET     = local.env.secret_ids["url_signing_secret"]
    WEBHOOK_SIGNING_SECRET = local.env.secret_ids["webhook_signing_secret"]
    REDIS_URL              = local.env.secret_ids["redis_url"]
  }
  secret_env = merge(
    local.secret_env_always,
    local.env.cloud_sql_instance != null ? { DATABASE_URL = local.env.secret_ids["database_url"] } : {},
  )

  # GCS_SIGNING_SERVICE_ACCOUNT: image URLs are signed through IAM signBlob as the worker's own
  # account (Workload Identity gives the pod tokens, never a key to sign with). MODEL_PATH:
  # the weights baked into the image (null: the image's own MODEL_PATH, /opt/model) or the
  # mounted models bucket.
  worker_env_all = {
    APP_ENV                                  = local.env.environment
    GCP_PROJECT                              = var.project_id
    JOB_STORE                                = local.env.cloud_sql_instance != null ? "sql" : "firestore"
    BLOB_STORE                               = "gcs"
    JOB_QUEUE                                = "pubsub"
    RATE_LIMITER                             = "redis"
    REQUEST_CACHE                            = "redis"
    GCS_BUCKET                               = local.env.images_bucket
    FIRESTORE_DATABASE                       = local.env.firestore_database
    FIRESTORE_COLLECTION_PREFIX              = local.env.firestore_collection_prefix
    PUBSUB_TOPIC                             = local.env.jobs_topic
    PUBSUB_DEAD_LETTER_TOPIC                 = local.env.dead_letter_topic
    PUBSUB_DEAD_LETTER_SUBSCRIPTION          = local.env.dead_letter_subscription
    PUBSUB_JOBS_SUBSCRIPTION                 = local.env.pull_subscription
    PUBSUB_DEAD_LETTER_RECORDER_SUBSCRIPTION = local.env.dead_letter_recorder_pull_subscription
    PULL_MAX_IN_FLIGHT                       = tostring(var.pull_max_in_flight)
    MAX_DELIVERY_ATTEMPTS                    = tostring(local.env.max_delivery_attempts)
    MAX_BATCH_SIZE                           = tostring(var.batch_size)
    DISPATCH_CAPACITY                        = tostring(local.env.dispatch_capacity)
    PUSH_AUTH                                = "oidc"
    PUSH_AUDIENCE                            = local.env.push_audience
    PUSH_SERVICE_ACCOUNT                     = local.env.push_service_account
    GCS_SIGNING_SERVICE_ACCOUNT              = local.env.worker_service_account
    MODEL_PATH                               = var.mount_models_bucket ? "/models/${var.model_name}" : var.model_path
    WORKER_HOST                              = "0.0.0.0"
    WORKER_PORT                              = "8080"
    SHUTDOWN_GRACE_S                         = tostring(var.shutdown_grace_seconds)
    LOG_LEVEL                                = local.env.log_level
  }
  worker_env = { for name, value in local.worker_env_all : name => value if value != null && value != "" }

  template_vars = {
    namespace                 = var.namespace
    service_account_name      = local.worker_ksa
    worker_service_account    = local.env.worker_service_account
    worker_image              = var.worker_image
    project_id                = var.project_id
    models_bucket             = local.env.models_bucket
    mount_models_bucket       = var.mount_models_bucket
    env                       = local.worker_env
    secret_env                = local.secret_env
    secrets_mount_dir         = local.secrets_mount_dir
    termination_grace_seconds = var.shutdown_grace_seconds + 60
    pull_subscription         = local.env.pull_subscription
    recorder_subscription     = local.env.dead_letter_recorder_pull_subscription
    max_replicas              = var.max_gpu_nodes
    messages_per_replica      = var.messages_per_replica
  }

  autoscaling_templates = {
    keda = "keda-scaledobject.yaml.tftpl"
    hpa  = "hpa-stackdriver.yaml.tftpl"
  }

  # Who runs `terraform apply` and deploy.sh for this environment: its Cloud Build account and
  # any other deployer it names (additional_deployers, e.g. staging's build account for prod).
  deployers = local.env.deployer_members
}

resource "google_project_service" "container" {
  project            = var.project_id
  service            = "container.googleapis.com"
  disable_on_destroy = false
}

# --- nodes' identity ---------------------------------------------------------------------------

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "txt2img-gke-nodes"
  display_name = "txt2img GKE nodes"
  description  = "Node identity of the txt2img cluster: logs, metrics, image pulls. Managed by Terraform."
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/autoscaling.metricsWriter",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  project    = var.project_id
  location   = var.region
  repository = "txt2img"
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}

# --- network -----------------------------------------------------------------------------------

resource "google_compute_subnetwork" "gke" {
  project                  = var.project_id
  name                     = "${var.cluster_name}-gke-${var.region}"
  region                   = var.region
  network                  = local.env.network_id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = var.pods_cidr
  }

  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = var.services_cidr
  }

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }

  lifecycle {
    precondition {
      condition     = local.env.project_id == var.project_id && local.env.region == var.region
      error_message = "project_id and region must be those of the environment whose state is read."
    }
    precondition {
      condition     = local.env.pull_subscription != null
      error_message = "Apply the environment with worker_platform = \"gke\" first: it creates the pull subscriptions and removes the Cloud Run worker."
    }
  }
}

# Private nodes have no external address: Cloud NAT lets them pull public images (KEDA, the
# metrics adapter); Google APIs and Artifact Registry go through Private Google Access.
resource "google_compute_router" "gke" {
  project = var.project_id
  name    = "${var.cluster_name}-gke"
  region  = var.region
  network = local.env.network_id
}

resource "google_compute_router_nat" "gke" {
  project                            = var.project_id
  name                               = "${var.cluster_name}-gke"
  router                             = google_compute_router.gke.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.gke.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# --- cluster -----------------------------------------------------------------------------------

resource "google_container_cluster" "this" {
  # checkov:skip=CKV_GCP_66: Binary Authorization needs an attestation pipeline this stack does not have yet; images come only from the project's own Artifact Registry, pushed by Cloud Build.
  # checkov:skip=CKV_GCP_24: PodSecurityPolicy was removed from Kubernetes (1.25); pods are restricted by their securityContext instead.
  # checkov:skip=CKV_GCP_65: Google Groups for RBAC needs a Workspace/Cloud Identity domain, which a project may not have.
  # checkov:skip=CKV_GCP_12: network policy is enforced by GKE Dataplane V2 (datapath_provider = ADVANCED_DATAPATH), not by the legacy network_policy addon checkov looks for.
  provider = google-beta

  project             = var.project_id
  name                = var.cluster_name
  location            = var.region
  network             = local.env.network_id
  subnetwork          = google_compute_subnetwork.gke.id
  deletion_protection = var.deletion_protection
  resource_labels     = local.labels

  remove_default_node_pool = true
  initial_node_count       = 1

  networking_mode             = "VPC_NATIVE"
  datapath_provider           = "ADVANCED_DATAPATH"
  enable_intranode_visibility = true
  enable_shielded_nodes       = true
  enable_legacy_abac          = false

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  # The DNS-based control plane endpoint: kubectl reaches it from anywhere (Cloud Build's
  # workers, a laptop) and every request is authorized by IAM, with no IP allowlist
  # (gcloud container clusters get-credentials --dns-endpoint).
  control_plane_endpoints_config {
    dns_endpoint_config {
      allow_external_traffic = true
    }
  }

  release_channel {
    channel = var.release_channel
  }

  workload_identity_config {
    workload_pool = local.workload_pool
  }

  # Secret Manager secrets as files (SecretProviderClass), the models bucket as a volume.
  secret_manager_config {
    enabled = true
  }

  addons_config {
    gcs_fuse_csi_driver_config {
      enabled = true
    }
    http_load_balancing {
      disabled = true
    }
  }

  # Scale GPU nodes down quickly once their pods are gone.
  cluster_autoscaling {
    autoscaling_profile = "OPTIMIZE_UTILIZATION"
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = true
    }
  }

  # Only the default pool (deleted right after creation) uses this.
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }

  # The deployer that applies this (Cloud Build) needs its own grants below before it may
  # create the cluster and pools that run as the nodes' account.
  depends_on = [
    google_project_service.container,
    google_project_iam_member.nodes,
    google_project_iam_member.deployers_container,
    google_service_account_iam_member.deployers_act_as_nodes,
  ]
}

resource "google_container_node_pool" "system" {
  project  = var.project_id
  name     = "system"
  cluster  = google_container_cluster.this.id
  location = var.region

  autoscaling {
    total_min_node_count = 1
    total_max_node_count = 3
    location_policy      = "BALANCED"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.system_machine_type
    image_type      = "COS_CONTAINERD"
    disk_type       = "pd-balanced"
    disk_size_gb    = 50
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = { "txt2img/pool" = "system" }
    resource_labels = local.labels

    metadata = {
      disable-legacy-endpoints = "true"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

# NVIDIA L4 nodes, none while no worker pod asks for a GPU.
resource "google_container_node_pool" "gpu" {
  project        = var.project_id
  name           = "l4"
  cluster        = google_container_cluster.this.id
  location       = var.region
  node_locations = local.gpu_zones

  initial_node_count = 0

  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.max_gpu_nodes
    location_policy      = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 0
    max_unavailable = 1
  }

  node_config {
    machine_type    = var.gpu_machine_type
    spot            = var.gpu_spot
    image_type      = "COS_CONTAINERD"
    disk_type       = "pd-ssd"
    disk_size_gb    = 200
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = { "txt2img/pool" = "gpu" }
    resource_labels = local.labels

    guest_accelerator {
      type  = "nvidia-l4"
      count = 1
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }

    # Only pods that tolerate it (the GPU worker) land on GPU nodes.
    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }

    # Image streaming: a multi-GB CUDA image starts before it is fully pulled.
    gcfs_config {
      enabled = true
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

# --- Workload Identity -------------------------------------------------------------------------

# The worker's Kubernetes service account acts as the environment's worker service account,
# which already holds the worker's grants (Firestore, buckets, secrets, pull subscriptions).
resource "google_service_account_iam_member" "worker_workload_identity" {
  service_account_id = "projects/${var.project_id}/serviceAccounts/${local.env.worker_service_account}"
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${local.workload_pool}[${var.namespace}/${local.worker_ksa}]"
}

# The CSI drivers (Secret Manager add-on, Cloud Storage FUSE) authenticate as the Kubernetes
# service account itself: grant its principal read access to exactly what it mounts.
resource "google_secret_manager_secret_iam_member" "worker_csi" {
  for_each = local.secret_env

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = local.worker_principal
}

resource "google_storage_bucket_iam_member" "worker_models_fuse" {
  count = var.mount_models_bucket ? 1 : 0

  bucket = local.env.models_bucket
  role   = "roles/storage.objectViewer"
  member = local.worker_principal
}

moved {
  from = google_storage_bucket_iam_member.worker_models_fuse
  to   = google_storage_bucket_iam_member.worker_models_fuse[0]
}

# --- deployers ---------------------------------------------------------------------------------

# The environment's deployers (Cloud Build) apply this configuration and the worker's
# manifests: the cluster, its node pools (which run as the nodes' account) and the Kubernetes
# objects.
resource "google_project_iam_member" "deployers_container" {
  for_each = local.deployers

  project = var.project_id
  role    = "roles/container.admin"
  member  = each.value
}

resource "google_service_account_iam_member" "deployers_act_as_nodes" {
  for_each = local.deployers

  service_account_id = google_service_account.nodes.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

# Autoscaling reads the subscription backlog from Cloud Monitoring: KEDA's operator (default)
# or the Custom Metrics Stackdriver Adapter (the HPA alternative).
resource "google_project_iam_member" "metrics_readers" {
  for_each = {
    keda    = "${local.principal_prefix}/ns/keda/sa/keda-operator"
    adapter = "${local.principal_prefix}/ns/custom-metrics/sa/custom-metrics-stackdriver-adapter"
  }

  project = var.project_id
  role    = "roles/monitoring.viewer"
  member  = each.value
}
