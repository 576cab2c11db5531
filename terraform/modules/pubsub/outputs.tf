output "jobs_topic" {
  description = "Jobs topic name (PUBSUB_TOPIC)."
  value       = google_pubsub_topic.jobs.name
}

output "dead_letter_topic" {
  description = "Dead-letter topic name (PUBSUB_DEAD_LETTER_TOPIC)."
  value       = google_pubsub_topic.dead_letter.name
}

output "dead_letter_subscription" {
  description = "Pull subscription keeping dead letters (PUBSUB_DEAD_LETTER_SUBSCRIPTION)."
  value       = google_pubsub_subscription.dead_letter.name
}

output "push_subscription" {
  description = "Push subscription feeding the Cloud Run worker (null without push)."
  value       = local.push_enabled ? google_pubsub_subscription.jobs_worker[0].name : null
}

output "dead_letter_recorder_subscription" {
  description = "Push subscription recording dead letters (null without push)."
  value       = local.push_enabled ? google_pubsub_subscription.dead_letter_recorder[0].name : null
}

output "pull_subscription" {
  description = "Pull subscription for GKE workers (null unless enabled)."
  value       = var.pull_subscriptions_enabled ? google_pubsub_subscription.jobs_worker_pull[0].name : null
}

output "dead_letter_recorder_pull_subscription" {
  description = "Pull subscription on the dead-letter topic for GKE workers (null unless enabled)."
  value       = var.pull_subscriptions_enabled ? google_pubsub_subscription.dead_letter_recorder_pull[0].name : null
}
