variable "project_id" {
  description = "Project of the secrets."
  type        = string
}

variable "secrets" {
  description = "Secrets by key: the Secret Manager id, and which accessor_members (by key) may read it."
  type = map(object({
    secret_id = string
    accessors = list(string)
  }))
  default = {
    api_key_pepper = {
      secret_id = "txt2img-api-key-pepper"
      accessors = ["api", "worker"]
    }
    url_signing_secret = {
      secret_id = "txt2img-url-signing-secret"
      accessors = ["api", "worker"]
    }
    # Both processes sign webhook deliveries: the API (cancels) and the worker (job endings).
    webhook_signing_secret = {
      secret_id = "txt2img-webhook-signing-secret"
      accessors = ["api", "worker"]
    }
    bootstrap_api_key = {
      secret_id = "txt2img-bootstrap-api-key"
      accessors = ["api"]
    }
    # The API is public, so its /metrics answers only this bearer token (METRICS_BEARER_TOKEN);
    # the worker's ingress is internal, so its own /metrics needs none.
    metrics_bearer_token = {
      secret_id = "txt2img-metrics-bearer-token"
      accessors = ["api"]
    }
  }
}

variable "accessor_members" {
  description = "IAM members that may be named as accessors, keyed by a static label (e.g. { api = \"serviceAccount:...\" })."
  type        = map(string)

  validation {
    condition     = alltrue([for member in values(var.accessor_members) : !contains(["allUsers", "allAuthenticatedUsers"], member)])
    error_message = "Secrets cannot be readable by allUsers or allAuthenticatedUsers."
  }
}

variable "labels" {
  description = "Labels put on the secrets."
  type        = map(string)
  default     = {}
}
