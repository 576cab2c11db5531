variable "project_id" {
  description = "Project that holds the service accounts."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of the account ids: PREFIX-api, PREFIX-worker, PREFIX-push-invoker, PREFIX-build (ids are 6-30 characters)."
  type        = string
  default     = "txt2img"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,16}$", var.name_prefix))
    error_message = "name_prefix must be 3-17 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "cloud_sql_client" {
  description = "Grant roles/cloudsql.client to the api and worker accounts (only with use_cloud_sql)."
  type        = bool
  default     = false
}

variable "build_project_roles" {
  description = "Project roles of the build account, which runs `terraform apply` from Cloud Build. Predefined roles only; trim them if another identity deploys."
  type        = list(string)
  nullable    = false
  # Enough to create, update and delete every resource type terraform/stack declares (GKE's
  # container.admin is granted by terraform/gke); tests/unit/infra/test_iam_matrix.py derives
  # what each type needs and fails when these stop covering it.
  default = [
    "roles/artifactregistry.admin",
    # The outbox sweep's scheduler job (modules/cloud_run_api).
    "roles/cloudscheduler.admin",
    "roles/cloudsql.admin",
    "roles/compute.networkAdmin",
    # Firewall rules (modules/network): compute.networkAdmin has compute.firewalls.get and list
    # only; compute.firewalls.create/update/delete are in compute.securityAdmin
    # (https://cloud.google.com/iam/docs/roles-permissions/compute).
    "roles/compute.securityAdmin",
    "roles/datastore.owner",
    "roles/iam.serviceAccountAdmin",
    "roles/logging.logWriter",
    "roles/pubsub.admin",
    "roles/redis.admin",
    "roles/resourcemanager.projectIamAdmin",
    "roles/run.admin",
    "roles/secretmanager.admin",
    "roles/servicenetworking.networksAdmin",
    "roles/serviceusage.serviceUsageAdmin",
    "roles/storage.admin",
  ]

  validation {
    condition     = length(setintersection(toset(var.build_project_roles), toset(["roles/owner", "roles/editor", "roles/viewer"]))) == 0
    error_message = "Basic roles (roles/owner, roles/editor, roles/viewer) are not allowed; use predefined roles."
  }
}

variable "additional_deployer_members" {
  description = "Other identities that deploy this project with build_project_roles, keyed by a static label (e.g. the staging project's txt2img-build account deploying prod)."
  type        = map(string)
  default     = {}
}
