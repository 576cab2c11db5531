output "project_id" {
  description = "Project of the environment."
  value       = var.project_id
}

output "region" {
  description = "Region of the environment."
  value       = var.region
}

output "environment" {
  description = "APP_ENV of the services."
  value       = var.environment
}

output "api_url" {
  description = "HTTPS URL of the public API."
  value       = module.api.url
}

output "worker_platform" {
  description = "Where the GPU worker runs: cloud_run, or gke (Cloud Build then applies terraform/gke and rolls the worker there)."
  value       = var.worker_platform
}

output "worker_url" {
  description = "HTTPS URL of the Cloud Run GPU worker (null with worker_platform = gke)."
  value       = local.worker_on_cloud_run ? module.worker[0].url : null
}

output "jobs_topic" {
  description = "PUBSUB_TOPIC."
  value       = module.pubsub.jobs_topic
}

output "push_subscription" {
  description = "Push subscription feeding the Cloud Run worker (null with worker_platform = gke)."
  value       = module.pubsub.push_subscription
}

output "pull_subscription" {
  description = "PUBSUB_JOBS_SUBSCRIPTION for GKE pull workers (null with worker_platform = cloud_run)."
  value       = module.pubsub.pull_subscription
}

output "dead_letter_recorder_pull_subscription" {
  description = "PUBSUB_DEAD_LETTER_RECORDER_SUBSCRIPTION for GKE pull workers (null with worker_platform = cloud_run)."
  value       = module.pubsub.dead_letter_recorder_pull_subscription
}

output "dead_letter_topic" {
  description = "PUBSUB_DEAD_LETTER_TOPIC."
  value       = module.pubsub.dead_letter_topic
}

output "dead_letter_subscription" {
  description = "PUBSUB_DEAD_LETTER_SUBSCRIPTION (read by txt2img-admin dead-letters)."
  value       = module.pubsub.dead_letter_subscription
}

output "max_delivery_attempts" {
  description = "MAX_DELIVERY_ATTEMPTS (set on the subscriptions)."
  value       = var.max_delivery_attempts
}

output "dispatch_capacity" {
  description = "DISPATCH_CAPACITY every process of the environment shares."
  value       = local.dispatch_capacity
}

output "log_level" {
  description = "LOG_LEVEL of the services."
  value       = var.log_level
}

output "push_audience" {
  description = "PUSH_AUDIENCE."
  value       = var.push_audience
}

output "images_bucket" {
  description = "GCS_BUCKET: generated images."
  value       = module.storage.images_bucket
}

output "models_bucket" {
  description = "Bucket of the model weights (mounted at /models in the worker)."
  value       = module.storage.models_bucket
}

output "artifact_registry_repository" {
  description = "Image prefix REGION-docker.pkg.dev/PROJECT/txt2img."
  value       = module.artifact_registry.repository_url
}

output "api_service_account" {
  description = "Email of the API's service account (also GCS_SIGNING_SERVICE_ACCOUNT)."
  value       = module.service_accounts.emails.api
}

output "worker_service_account" {
  description = "Email of the GPU worker's service account."
  value       = module.service_accounts.emails.worker
}

output "push_service_account" {
  description = "PUSH_SERVICE_ACCOUNT: the identity of Pub/Sub's pushes."
  value       = module.service_accounts.emails.push_invoker
}

output "build_service_account" {
  description = "Email of the Cloud Build service account."
  value       = module.service_accounts.emails.build
}

output "deployer_members" {
  description = "IAM members that deploy this environment (its build account and additional_deployers); terraform/gke lets them manage the cluster."
  value       = merge({ build = module.service_accounts.members.build }, var.additional_deployers)
}

output "redis_host" {
  description = "Private IP of Memorystore."
  value       = module.memorystore.host
}

output "secret_ids" {
  description = "Secret Manager ids mounted as API_KEY_PEPPER, URL_SIGNING_SECRET, WEBHOOK_SIGNING_SECRET, BOOTSTRAP_API_KEY, REDIS_URL (and DATABASE_URL)."
  value = merge(
    module.secrets.secret_ids,
    { redis_url = module.memorystore.url_secret_id },
    var.use_cloud_sql ? { database_url = module.cloud_sql[0].url_secret_id } : {},
  )
}

output "firestore_database" {
  description = "FIRESTORE_DATABASE."
  value       = module.firestore.database
}

output "firestore_collection_prefix" {
  description = "FIRESTORE_COLLECTION_PREFIX."
  value       = module.firestore.collection_prefix
}

output "cloud_sql_instance" {
  description = "Cloud SQL instance name (null without use_cloud_sql)."
  value       = var.use_cloud_sql ? module.cloud_sql[0].instance_name : null
}

output "cloud_sql_private_ip" {
  description = "Private IP of Cloud SQL (null without use_cloud_sql)."
  value       = var.use_cloud_sql ? module.cloud_sql[0].private_ip_address : null
}

output "network_name" {
  description = "VPC name (terraform/gke adds its subnet to it)."
  value       = module.network.network_name
}

output "network_id" {
  description = "VPC id."
  value       = module.network.network_id
}
