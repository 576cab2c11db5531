# Secret Manager secrets the services read as environment variables. Terraform creates the
# secrets and who may read them; the values are added out of band (`gcloud secrets versions
# add`), so they never appear in Terraform state or plans.
locals {
  grants = merge([
    for name, secret in var.secrets : {
      for accessor in secret.accessors : "${name}/${accessor}" => { secret = name, member = var.accessor_members[accessor] }
    }
  ]...)
}

resource "google_secret_manager_secret" "this" {
  for_each = var.secrets

  project   = var.project_id
  secret_id = each.value.secret_id
  labels    = var.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_iam_member" "accessors" {
  for_each = local.grants

  project   = var.project_id
  secret_id = google_secret_manager_secret.this[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value.member
}
