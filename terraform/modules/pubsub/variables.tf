variable "project_id" {
  description = "Project of the topics and subscriptions."
  type        = string
}

variable "topic_name" {
  description = "Topic the API publishes jobs to (PUBSUB_TOPIC)."
  type        = string
  default     = "jobs"
}

variable "push_subscription_name" {
  description = "Push subscription feeding the Cloud Run worker (PUBSUB_JOBS_SUBSCRIPTION in push mode)."
  type        = string
  default     = "jobs-worker"
}

variable "dead_letter_topic_name" {
  description = "Topic undeliverable jobs are forwarded to (PUBSUB_DEAD_LETTER_TOPIC)."
  type        = string
  default     = "jobs-dead-letter"
}

variable "dead_letter_subscription_name" {
  description = "Pull subscription that keeps dead letters for the replay command (PUBSUB_DEAD_LETTER_SUBSCRIPTION)."
  type        = string
  default     = "jobs-dead-letter"
}

variable "dead_letter_recorder_subscription_name" {
  description = "Push subscription that hands dead letters to the worker's /pubsub/dead-letter."
  type        = string
  default     = "jobs-dead-letter-recorder"
}

variable "pull_subscription_name" {
  description = "Pull subscription for GKE workers (PUBSUB_JOBS_SUBSCRIPTION with --pull)."
  type        = string
  default     = "jobs-worker-pull"
}

variable "dead_letter_recorder_pull_subscription_name" {
  description = "Pull subscription on the dead-letter topic for GKE workers (PUBSUB_DEAD_LETTER_RECORDER_SUBSCRIPTION with --pull)."
  type        = string
  default     = "jobs-dead-letter-recorder-pull"
}

variable "push_endpoint_base_url" {
  description = "Worker URL (https://...run.app) the push subscriptions deliver to; null creates no push subscription (GKE pull workers instead)."
  type        = string
  default     = null

  validation {
    condition     = var.push_endpoint_base_url == null || can(regex("^https://", var.push_endpoint_base_url))
    error_message = "push_endpoint_base_url must be an https:// URL."
  }
}

variable "pull_subscriptions_enabled" {
  description = "Create the pull subscriptions GKE workers read (jobs and dead letters)."
  type        = bool
  default     = false
}

variable "push_service_account_email" {
  description = "Account whose OIDC token Pub/Sub attaches to every push (PUSH_SERVICE_ACCOUNT)."
  type        = string
  default     = null
}

variable "push_service_account_id" {
  description = "Resource name (projects/PROJECT/serviceAccounts/EMAIL) of the push account, on which the Pub/Sub service agent gets token-creator rights."
  type        = string
  default     = null
}

variable "push_audience" {
  description = "Audience of the push OIDC token (PUSH_AUDIENCE); a fixed string, set identically on the worker."
  type        = string
  default     = "txt2img-worker-push"
}

variable "ack_deadline_seconds" {
  description = "Ack deadline of the jobs subscriptions; for push it is also each delivery's HTTP timeout, so it bounds one generation."
  type        = number
  default     = 600

  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be between 10 and 600."
  }
}

variable "minimum_backoff_seconds" {
  description = "Shortest wait before a nacked message is redelivered."
  type        = number
  default     = 10

  validation {
    condition     = var.minimum_backoff_seconds >= 0 && var.minimum_backoff_seconds <= 600
    error_message = "minimum_backoff_seconds must be between 0 and 600."
  }
}

variable "maximum_backoff_seconds" {
  description = "Longest wait before a nacked message is redelivered."
  type        = number
  default     = 600

  validation {
    condition     = var.maximum_backoff_seconds >= 0 && var.maximum_backoff_seconds <= 600
    error_message = "maximum_backoff_seconds must be between 0 and 600."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries before a message is dead-lettered (MAX_DELIVERY_ATTEMPTS)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "message_retention_seconds" {
  description = "How long unacknowledged jobs are kept (and how long the topic retains messages)."
  type        = number
  default     = 604800
}

variable "dead_letter_retention_seconds" {
  description = "How long dead letters are kept for the replay command (7 days)."
  type        = number
  default     = 604800

  validation {
    condition     = var.dead_letter_retention_seconds >= 600 && var.dead_letter_retention_seconds <= 2678400
    error_message = "dead_letter_retention_seconds must be between 10 minutes and 31 days."
  }
}

variable "publisher_members" {
  description = "Members that may publish jobs (the API, and the workers, which hand the next jobs in line over when one ends), keyed by a static label."
  type        = map(string)
  default     = {}
}

variable "pull_subscriber_members" {
  description = "Members that may pull from the pull subscriptions (the GKE worker), keyed by a static label."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels put on topics and subscriptions."
  type        = map(string)
  default     = {}
}
