# The job queue, mirroring emulators/pubsub.py: a jobs topic pushed to the GPU worker with an
# OIDC token, a retry policy and a dead-letter policy; a dead-letter topic whose pull
# subscription keeps letters for `txt2img-admin dead-letters` and whose push subscription lets
# the worker mark their jobs failed. Pull subscriptions replace the push ones for GKE workers.
data "google_project" "this" {
  project_id = var.project_id
}

# Makes sure the Pub/Sub service agent exists before IAM names it (on a new project it is
# created lazily).
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"
}

locals {
  push_enabled         = var.push_endpoint_base_url != null
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # Subscriptions whose undeliverable messages go to the dead-letter topic.
  dead_lettered_subscriptions = merge(
    local.push_enabled ? { push = google_pubsub_subscription.jobs_worker[0].name } : {},
    var.pull_subscriptions_enabled ? { pull = google_pubsub_subscription.jobs_worker_pull[0].name } : {},
  )
}

resource "google_pubsub_topic" "jobs" {
  # checkov:skip=CKV_GCP_83: messages carry only a job id (the job record holds the prompt); Google-managed encryption is used.
  project                    = var.project_id
  name                       = var.topic_name
  labels                     = var.labels
  message_retention_duration = "${var.message_retention_seconds}s"
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: dead letters carry only a job id; Google-managed encryption is used.
  project                    = var.project_id
  name                       = var.dead_letter_topic_name
  labels                     = var.labels
  message_retention_duration = "${var.dead_letter_retention_seconds}s"
}

resource "google_pubsub_subscription" "jobs_worker" {
  count = local.push_enabled ? 1 : 0

  project = var.project_id
  name    = var.push_subscription_name
  topic   = google_pubsub_topic.jobs.id
  labels  = var.labels

  # For push, the ack deadline is also the HTTP request timeout of each delivery.
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = "${var.message_retention_seconds}s"

  push_config {
    push_endpoint = "${var.push_endpoint_base_url}/pubsub/push"

    oidc_token {
      service_account_email = var.push_service_account_email
      audience              = var.push_audience
    }
  }

  retry_policy {
    minimum_backoff = "${var.minimum_backoff_seconds}s"
    maximum_backoff = "${var.maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]

  lifecycle {
    precondition {
      condition     = var.push_service_account_email != null && var.push_service_account_id != null
      error_message = "Push subscriptions need push_service_account_email and push_service_account_id."
    }
  }
}

# Keeps dead letters for the operator (`txt2img-admin dead-letters list|replay|purge`).
resource "google_pubsub_subscription" "dead_letter" {
  project = var.project_id
  name    = var.dead_letter_subscription_name
  topic   = google_pubsub_topic.dead_letter.id
  labels  = var.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "${var.dead_letter_retention_seconds}s"
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}

# Pushes each dead letter to the worker, which marks its job failed/dead_lettered.
resource "google_pubsub_subscription" "dead_letter_recorder" {
  count = local.push_enabled ? 1 : 0

  project = var.project_id
  name    = var.dead_letter_recorder_subscription_name
  topic   = google_pubsub_topic.dead_letter.id
  labels  = var.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "${var.dead_letter_retention_seconds}s"

  push_config {
    push_endpoint = "${var.push_endpoint_base_url}/pubsub/dead-letter"

    oidc_token {
      service_account_email = var.push_service_account_email
      audience              = var.push_audience
    }
  }

  retry_policy {
    minimum_backoff = "${var.minimum_backoff_seconds}s"
    maximum_backoff = "${var.maximum_backoff_seconds}s"
  }

  expiration_policy {
    ttl = ""
  }
}

# Pull mode (python -m gpu_worker --pull on GKE): PUBSUB_JOBS_SUBSCRIPTION.
resource "google_pubsub_subscription" "jobs_worker_pull" {
  count = var.pull_subscriptions_enabled ? 1 : 0

  project = var.project_id
  name    = var.pull_subscription_name
  topic   = google_pubsub_topic.jobs.id
  labels  = var.labels

  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = "${var.message_retention_seconds}s"

  retry_policy {
    minimum_backoff = "${var.minimum_backoff_seconds}s"
    maximum_backoff = "${var.maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

# Pull mode: PUBSUB_DEAD_LETTER_RECORDER_SUBSCRIPTION.
resource "google_pubsub_subscription" "dead_letter_recorder_pull" {
  count = var.pull_subscriptions_enabled ? 1 : 0

  project = var.project_id
  name    = var.dead_letter_recorder_pull_subscription_name
  topic   = google_pubsub_topic.dead_letter.id
  labels  = var.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "${var.dead_letter_retention_seconds}s"

  retry_policy {
    minimum_backoff = "${var.minimum_backoff_seconds}s"
    maximum_backoff = "${var.maximum_backoff_seconds}s"
  }

  expiration_policy {
    ttl = ""
  }
}

# --- IAM -------------------------------------------------------------------------------------

resource "google_pubsub_topic_iam_member" "publishers" {
  for_each = var.publisher_members

  project = var.project_id
  topic   = google_pubsub_topic.jobs.name
  role    = "roles/pubsub.publisher"
  member  = each.value
}

resource "google_pubsub_subscription_iam_member" "pull_subscribers" {
  for_each = var.pull_subscriptions_enabled ? var.pull_subscriber_members : {}

  project      = var.project_id
  subscription = google_pubsub_subscription.jobs_worker_pull[0].name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}

resource "google_pubsub_subscription_iam_member" "dead_letter_recorder_pull_subscribers" {
  for_each = var.pull_subscriptions_enabled ? var.pull_subscriber_members : {}

  project      = var.project_id
  subscription = google_pubsub_subscription.dead_letter_recorder_pull[0].name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}

# Dead-lettering: the Pub/Sub service agent publishes to the dead-letter topic ...
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent

  depends_on = [google_project_service_identity.pubsub]
}

# ... and acknowledges the forwarded message on the source subscription.
resource "google_pubsub_subscription_iam_member" "dead_letter_source_subscriber" {
  for_each = local.dead_lettered_subscriptions

  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent

  depends_on = [google_project_service_identity.pubsub]
}

# Push OIDC: the service agent mints tokens for the push identity (needed on projects created
# before April 2021, harmless after), granted on that one account only.
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  count = local.push_enabled ? 1 : 0

  service_account_id = var.push_service_account_id
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent

  depends_on = [google_project_service_identity.pubsub]
}
