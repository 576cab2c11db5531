# The Google Cloud APIs the stack uses. Enabling is idempotent; nothing is disabled on destroy,
# because other resources in the project (or a second stack) may rely on the same APIs.
resource "google_project_service" "this" {
  for_each = toset(var.services)

  project                    = var.project_id
  service                    = each.value
  disable_on_destroy         = false
  disable_dependent_services = false
}
