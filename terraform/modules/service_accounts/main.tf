# One identity per process, each with only what it needs. Resource-level grants (a bucket, a
# topic, a secret, the worker service) live in the module that owns the resource; this module
# grants the few project-level roles that have no narrower scope.
locals {
  accounts = {
    api          = "txt2img API (Cloud Run)"
    worker       = "txt2img GPU worker (Cloud Run or GKE)"
    push_invoker = "Pub/Sub push identity: invokes the GPU worker"
    scheduler    = "Cloud Scheduler identity: runs the API's outbox sweep job"
    build        = "Cloud Build: builds, pushes and deploys txt2img"
  }

  # Writing logs, metrics and traces; Firestore data access has no per-collection IAM, so
  # roles/datastore.user is granted on the project (the narrowest scope Firestore offers).
  runtime_roles = concat(
    [
      "roles/cloudtrace.agent",
      "roles/datastore.user",
      "roles/logging.logWriter",
      "roles/monitoring.metricWriter",
    ],
    var.cloud_sql_client ? ["roles/cloudsql.client"] : [],
  )

  # Identities that run `terraform apply` for this project: its own build account, plus e.g.
  # the staging project's build account when one pipeline deploys both environments.
  deployers = merge(
    { build = "serviceAccount:${google_service_account.this["build"].email}" },
    var.additional_deployer_members,
  )

  project_grants = merge(
    {
      for pair in setproduct(["api", "worker"], local.runtime_roles) :
      "${pair[0]}/${pair[1]}" => { role = pair[1], member = "serviceAccount:${google_service_account.this[pair[0]].email}" }
    },
    {
      for pair in setproduct(keys(local.deployers), var.build_project_roles) :
      "deployer/${pair[0]}/${pair[1]}" => { role = pair[1], member = local.deployers[pair[0]] }
    },
  )
}

resource "google_service_account" "this" {
  for_each = local.accounts

  project      = var.project_id
  account_id   = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  display_name = each.value
  description  = "${each.value}. Managed by Terraform."
}

resource "google_project_iam_member" "this" {
  for_each = local.project_grants

  project = var.project_id
  role    = each.value.role
  member  = each.value.member
}

# The API (image URLs in job responses) and the worker (image URLs in webhook bodies) sign V4
# URLs through IAM signBlob as themselves (GCS_SIGNING_SERVICE_ACCOUNT), which "requires the
# iam.serviceAccounts.signBlob permission" on the signing account
# (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/signBlob):
# each gets it on its own account, and on no other. roles/iam.serviceAccountTokenCreator rather
# than a custom role: its other permissions (tokens for the same account) give a process nothing
# its own credentials do not, and a custom role would be one more project-level object to own.
resource "google_service_account_iam_member" "api_signs_as_itself" {
  service_account_id = google_service_account.this["api"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.this["api"].email}"
}

resource "google_service_account_iam_member" "worker_signs_as_itself" {
  service_account_id = google_service_account.this["worker"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.this["worker"].email}"
}

# Deployers create revisions and subscriptions that run as these accounts
# (iam.serviceAccounts.actAs), granted per account rather than project-wide.
resource "google_service_account_iam_member" "deployers_act_as" {
  for_each = {
    for pair in setproduct(keys(local.deployers), ["api", "worker", "push_invoker", "scheduler"]) :
    "${pair[0]}/${pair[1]}" => { deployer = pair[0], account = pair[1] }
  }

  service_account_id = google_service_account.this[each.value.account].name
  role               = "roles/iam.serviceAccountUser"
  member             = local.deployers[each.value.deployer]
}
