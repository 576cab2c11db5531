# One environment = one Google Cloud project. The API and the GPU worker run on Cloud Run; jobs
# flow through Pub/Sub (push with OIDC, retries, dead letters); job records live in Firestore
# (or Cloud SQL with use_cloud_sql), images in Cloud Storage, rate limits and the request cache
# in Memorystore. With worker_platform = "gke", the Cloud Run worker and its push
# subscriptions are replaced by pull subscriptions that terraform/gke's workers read.
#
# This root configuration serves every environment: an environment is a project, a state prefix
# (../environments/ENV.gcs.tfbackend) and its settings (../environments/ENV.tfvars); the
# defaults in variables.tf are production's.
provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

locals {
  # The stack's own labels win over extra ones.
  labels = merge(var.labels, {
    app         = "txt2img"
    environment = var.environment
    managed-by  = "terraform"
  })

  worker_on_cloud_run = var.worker_platform == "cloud_run"

  # Jobs the fair dispatcher hands to the GPUs at once (dal/dispatcher.py): on every worker
  # instance Cloud Run may start, a batch running (its request concurrency) and the next batch
  # waiting in Pub/Sub. Cloud Run scales on concurrent push requests, so anything less leaves
  # instances it could start idle. docs/architecture.md has the arithmetic.
  dispatch_capacity = var.dispatch_capacity > 0 ? var.dispatch_capacity : var.worker_max_instances * 2 * var.batch_size

  # Settings both processes read (names from dal/settings.py).
  shared_env = {
    APP_ENV                         = var.environment
    GCP_PROJECT                     = var.project_id
    JOB_STORE                       = var.use_cloud_sql ? "sql" : "firestore"
    BLOB_STORE                      = "gcs"
    JOB_QUEUE                       = "pubsub"
    RATE_LIMITER                    = "redis"
    REQUEST_CACHE                   = "redis"
    GCS_BUCKET                      = module.storage.images_bucket
    FIRESTORE_DATABASE              = module.firestore.database
    FIRESTORE_COLLECTION_PREFIX     = module.firestore.collection_prefix
    PUBSUB_TOPIC                    = module.pubsub.jobs_topic
    PUBSUB_DEAD_LETTER_TOPIC        = module.pubsub.dead_letter_topic
    PUBSUB_DEAD_LETTER_SUBSCRIPTION = module.pubsub.dead_letter_subscription
    MAX_DELIVERY_ATTEMPTS           = tostring(var.max_delivery_attempts)
    PUSH_AUTH                       = "oidc"
    PUSH_AUDIENCE                   = var.push_audience
    PUSH_SERVICE_ACCOUNT            = module.service_accounts.emails.push_invoker
    LOG_LEVEL                       = var.log_level
    QUOTA_MAX_IN_FLIGHT             = tostring(var.quota_max_in_flight)
    QUOTA_IMAGES_PER_DAY            = tostring(var.quota_images_per_day)
    DISPATCH_CAPACITY               = tostring(local.dispatch_capacity)
  }

  # Settings read from Secret Manager (value_source.secret_key_ref, version "latest").
  secret_env_always = {
    API_KEY_PEPPER         = { secret = module.secrets.secret_ids["api_key_pepper"] }
    URL_SIGNING_SECRET     = { secret = module.secrets.secret_ids["url_signing_secret"] }
    WEBHOOK_SIGNING_SECRET = { secret = module.secrets.secret_ids["webhook_signing_secret"] }
    REDIS_URL              = { secret = module.memorystore.url_secret_id }
  }
  shared_secret_env = merge(
    local.secret_env_always,
    var.use_cloud_sql ? { DATABASE_URL = { secret = module.cloud_sql[0].url_secret_id } } : {},
  )

  api_secret_env = merge(
    local.shared_secret_env,
    { METRICS_BEARER_TOKEN = { secret = module.secrets.secret_ids["metrics_bearer_token"] } },
    var.bootstrap_api_key_enabled ? { BOOTSTRAP_API_KEY = { secret = module.secrets.secret_ids["bootstrap_api_key"] } } : {},
  )

  runtime_members = {
    api    = module.service_accounts.members.api
    worker = module.service_accounts.members.worker
  }
}

module "project_services" {
  source     = "../modules/project_services"
  project_id = var.project_id
}

module "service_accounts" {
  source              = "../modules/service_accounts"
  project_id          = var.project_id
  cloud_sql_client    = var.use_cloud_sql
  build_project_roles = var.grant_build_deploy_roles ? null : []

  additional_deployer_members = var.additional_deployers

  depends_on = [module.project_services]
}

module "artifact_registry" {
  source         = "../modules/artifact_registry"
  project_id     = var.project_id
  region         = var.region
  labels         = local.labels
  writer_members = { build = module.service_accounts.members.build }
  reader_members = var.artifact_registry_readers

  depends_on = [module.project_services]
}

module "network" {
  source                  = "../modules/network"
  project_id              = var.project_id
  region                  = var.region
  subnet_cidr             = var.subnet_cidr
  private_services_access = var.use_cloud_sql

  depends_on = [module.project_services]
}

module "storage" {
  source               = "../modules/storage"
  project_id           = var.project_id
  location             = var.region
  images_bucket_name   = "${var.project_id}-txt2img-images"
  models_bucket_name   = "${var.project_id}-txt2img-models"
  image_retention_days = var.image_retention_days
  cors_origins         = var.cors_origins
  force_destroy        = var.force_destroy_buckets
  labels               = local.labels

  images_iam_members = {
    # The API lists (readiness) and signs URLs; the worker writes and deletes images.
    api    = { role = "roles/storage.objectViewer", member = module.service_accounts.members.api }
    worker = { role = "roles/storage.objectUser", member = module.service_accounts.members.worker }
  }
  # The worker reads the models bucket when it is mounted (mount_models_bucket); the build
  # reads it to bake the model into the worker image (cloudbuild.yaml, _MODEL_SOURCE=gcs),
  # also when grant_build_deploy_roles withholds storage.admin.
  models_iam_members = {
    worker = { role = "roles/storage.objectViewer", member = module.service_accounts.members.worker }
    build  = { role = "roles/storage.objectViewer", member = module.service_accounts.members.build }
  }

  depends_on = [module.project_services]
}

module "firestore" {
  source              = "../modules/firestore"
  project_id          = var.project_id
  location            = coalesce(var.firestore_location, var.region)
  collection_prefix   = var.firestore_collection_prefix
  deletion_protection = var.deletion_protection

  depends_on = [module.project_services]
}

module "secrets" {
  source           = "../modules/secrets"
  project_id       = var.project_id
  accessor_members = local.runtime_members
  labels           = local.labels

  depends_on = [module.project_services]
}

module "memorystore" {
  source               = "../modules/memorystore"
  project_id           = var.project_id
  region               = var.region
  network_id           = module.network.network_id
  tier                 = var.redis_tier
  memory_size_gb       = var.redis_memory_size_gb
  url_accessor_members = local.runtime_members
  labels               = local.labels

  depends_on = [module.project_services]
}

module "cloud_sql" {
  source = "../modules/cloud_sql"
  count  = var.use_cloud_sql ? 1 : 0

  project_id           = var.project_id
  region               = var.region
  network_id           = module.network.network_id
  tier                 = var.cloud_sql_tier
  availability_type    = var.cloud_sql_availability_type
  deletion_protection  = var.deletion_protection
  url_accessor_members = local.runtime_members
  labels               = local.labels

  depends_on = [module.project_services, module.network]
}

module "api" {
  source                = "../modules/cloud_run_api"
  project_id            = var.project_id
  region                = var.region
  image                 = var.api_image
  service_account_email = module.service_accounts.emails.api
  network               = module.network.network_id
  subnetwork            = module.network.subnetwork_id
  env                   = local.shared_env
  secret_env            = local.api_secret_env
  min_instances         = var.api_min_instances
  max_instances         = var.api_max_instances
  allow_unauthenticated = var.allow_unauthenticated
  deletion_protection   = var.deletion_protection
  labels                = local.labels

  outbox_sweep_schedule           = var.outbox_sweep_schedule
  scheduler_service_account_email = module.service_accounts.emails.scheduler

  # Secrets and their accessor grants must exist before a revision reads them.
  depends_on = [module.secrets, module.memorystore, module.cloud_sql, module.storage, module.firestore]
}

module "worker" {
  source = "../modules/cloud_run_worker"
  count  = local.worker_on_cloud_run ? 1 : 0

  project_id                    = var.project_id
  region                        = var.region
  image                         = var.worker_image
  service_account_email         = module.service_accounts.emails.worker
  push_service_account_email    = module.service_accounts.emails.push_invoker
  custom_audiences              = [var.push_audience]
  network                       = module.network.network_id
  subnetwork                    = module.network.subnetwork_id
  env                           = local.shared_env
  secret_env                    = local.shared_secret_env
  cpu                           = var.worker_cpu
  memory                        = var.worker_memory
  batch_size                    = var.batch_size
  request_timeout_seconds       = var.worker_request_timeout_seconds
  max_instances                 = var.worker_max_instances
  gpu_zonal_redundancy_disabled = var.gpu_zonal_redundancy_disabled
  mount_models_bucket           = var.mount_models_bucket
  models_bucket                 = module.storage.models_bucket
  model_name                    = var.model_name
  model_path                    = var.model_path
  model_id                      = var.model_id
  deletion_protection           = var.deletion_protection
  labels                        = local.labels

  depends_on = [module.secrets, module.memorystore, module.cloud_sql, module.storage, module.firestore]
}

module "pubsub" {
  source     = "../modules/pubsub"
  project_id = var.project_id

  push_endpoint_base_url     = local.worker_on_cloud_run ? module.worker[0].url : null
  pull_subscriptions_enabled = !local.worker_on_cloud_run
  push_service_account_email = module.service_accounts.emails.push_invoker
  push_service_account_id    = module.service_accounts.ids.push_invoker
  push_audience              = var.push_audience
  ack_deadline_seconds       = var.ack_deadline_seconds
  max_delivery_attempts      = var.max_delivery_attempts
  minimum_backoff_seconds    = var.delivery_minimum_backoff_seconds
  publisher_members          = { api = module.service_accounts.members.api, worker = module.service_accounts.members.worker }
  pull_subscriber_members    = { worker = module.service_accounts.members.worker }
  labels                     = local.labels

  depends_on = [module.project_services]
}
