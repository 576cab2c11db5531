# The job store's database (Firestore in native mode) and the composite indexes its queries
# need. The indexes and field overrides come from firestore.indexes.json at the repository
# root (the Firebase CLI's format), so the queries in dal/firestore have one list of indexes,
# not two to keep equal; the module README says which query needs which.
resource "google_firestore_database" "this" {
  project                           = var.project_id
  name                              = var.database_name
  location_id                       = var.location
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "PESSIMISTIC"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = var.point_in_time_recovery ? "POINT_IN_TIME_RECOVERY_ENABLED" : "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = "DELETE"
}

locals {
  index_spec = jsondecode(file("${path.module}/../../../firestore.indexes.json"))
  # Keyed by collection and fields, e.g. "jobs:owner.ASCENDING,created_at.DESCENDING,...".
  composite_indexes = {
    for index in local.index_spec.indexes :
    "${index.collectionGroup}:${join(",", [for f in index.fields : "${f.fieldPath}.${f.order}"])}" => index
  }
  # Fields whose single-field indexes are switched off (job params and image refs are never
  # queried: cheaper writes, and no index-entry limits on large maps).
  unindexed_fields = {
    for override in local.index_spec.fieldOverrides :
    "${override.collectionGroup}.${override.fieldPath}" => override if length(override.indexes) == 0
  }
}

resource "google_firestore_index" "this" {
  for_each = local.composite_indexes

  project     = var.project_id
  database    = google_firestore_database.this.name
  collection  = "${var.collection_prefix}${each.value.collectionGroup}"
  query_scope = each.value.queryScope

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value.fieldPath
      order      = fields.value.order
    }
  }
}

resource "google_firestore_field" "unindexed" {
  for_each = local.unindexed_fields

  project    = var.project_id
  database   = google_firestore_database.this.name
  collection = "${var.collection_prefix}${each.value.collectionGroup}"
  field      = each.value.fieldPath

  index_config {}
}
