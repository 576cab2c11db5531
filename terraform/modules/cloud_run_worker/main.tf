# The GPU worker (python -m gpu_worker): one NVIDIA L4 per instance, scaled to zero when idle,
# fed by the Pub/Sub push subscription. Only the push identity may invoke it.
locals {
  models_mount_path = "/models"

  # Settings the module owns; var.env brings the rest (names from dal/settings.py).
  module_env = {
    WORKER_HOST    = "0.0.0.0"
    MAX_BATCH_SIZE = tostring(var.batch_size)
    MODEL_PATH     = var.mount_models_bucket ? "${local.models_mount_path}/${var.model_name}" : var.model_path
    MODEL_ID       = var.model_id
    # Webhook bodies carry freshly signed image URLs, signed through IAM signBlob as the
    # service's own account (roles/iam.serviceAccountTokenCreator on itself: service_accounts).
    GCS_SIGNING_SERVICE_ACCOUNT = var.service_account_email
  }

  env = { for name, value in merge(var.env, local.module_env) : name => value if value != null && value != "" }
}

resource "google_cloud_run_v2_service" "worker" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  description         = "txt2img GPU worker (Pub/Sub push)"
  deletion_protection = var.deletion_protection
  labels              = var.labels

  # Internal ingress still admits Pub/Sub push subscriptions of the same project that target
  # the default run.app URL (https://cloud.google.com/run/docs/securing/ingress, "Internal"),
  # which is all that calls the worker; the internet cannot even reach it, and IAM (below)
  # admits only the push identity.
  ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  # Cloud Run accepts an ID token only for its run.app URL or one of these: the push
  # subscriptions sign theirs for PUSH_AUDIENCE, which must be listed here or every push is
  # refused with 401 before it reaches the container
  # (https://cloud.google.com/run/docs/configuring/custom-audiences).
  custom_audiences = var.custom_audiences

  template {
    service_account       = var.service_account_email
    execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
    # One push request per job; up to batch_size concurrent jobs are batched on the GPU.
    max_instance_request_concurrency = var.batch_size
    # A push waits for the whole generation: never cut it before Pub/Sub's ack deadline.
    timeout                       = "${var.request_timeout_seconds}s"
    gpu_zonal_redundancy_disabled = var.gpu_zonal_redundancy_disabled
    labels                        = var.labels

    node_selector {
      accelerator = "nvidia-l4"
    }

    scaling {
      min_instance_count = 0
      max_instance_count = var.max_instances
    }

    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = var.network
        subnetwork = var.subnetwork
      }
    }

    containers {
      name  = "gpu-worker"
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu              = var.cpu
          memory           = var.memory
          "nvidia.com/gpu" = "1"
        }
        # GPU instances are billed per instance: keep the CPU allocated (no throttling).
        cpu_idle          = false
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value.secret
              version = env.value.version
            }
          }
        }
      }

      dynamic "volume_mounts" {
        for_each = var.mount_models_bucket ? [1] : []
        content {
          name       = "models"
          mount_path = local.models_mount_path
        }
      }

      # /readyz turns true only once the model is loaded and warmed: no push reaches a cold GPU.
      startup_probe {
        initial_delay_seconds = var.startup_probe_initial_delay_seconds
        period_seconds        = var.startup_probe_period_seconds
        timeout_seconds       = 5
        failure_threshold     = var.startup_probe_failure_threshold
        http_get {
          path = "/readyz"
          port = 8080
        }
      }

      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 10
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }

    dynamic "volumes" {
      for_each = var.mount_models_bucket ? [1] : []
      content {
        name = "models"
        gcs {
          bucket        = var.models_bucket
          read_only     = true
          mount_options = var.models_mount_options
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  lifecycle {
    precondition {
      condition     = !var.mount_models_bucket || var.models_bucket != null
      error_message = "mount_models_bucket = true needs models_bucket."
    }
    precondition {
      condition     = var.startup_probe_period_seconds * var.startup_probe_failure_threshold <= 240
      error_message = "startup_probe_period_seconds x startup_probe_failure_threshold must not exceed 240 s (Cloud Run's limit)."
    }
    precondition {
      condition     = var.mount_models_bucket || var.model_path != null
      error_message = "Without the models bucket mount, model_path must name the weights baked into the image."
    }
  }
}

# Invoker: the Pub/Sub push identity, and nobody else.
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  project  = var.project_id
  location = google_cloud_run_v2_service.worker.location
  name     = google_cloud_run_v2_service.worker.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.push_service_account_email}"
}
