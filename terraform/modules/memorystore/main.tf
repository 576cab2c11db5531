# Memorystore for Redis: the rate limiter and the request cache (RATE_LIMITER=redis,
# REQUEST_CACHE=redis). Reached from Cloud Run through Direct VPC egress over the VPC peering
# Memorystore sets up with `authorized_network`.
#
# AUTH is on; in-transit encryption is off: with TLS, Memorystore presents a certificate from
# its own per-instance CA, which every client would have to be given and trust (rediss:// plus a
# CA file), and the CA rotates. Traffic stays on the private VPC path and is encrypted by
# Google's network at the physical layer. The connection string (with the AUTH string) is
# written to Secret Manager and mounted as REDIS_URL, never set as a plain variable.
resource "google_redis_instance" "this" {
  # checkov:skip=CKV_GCP_97: transit encryption would need the instance's private CA in every client (rediss:// + CA file); traffic stays on the private VPC peering and AUTH is enforced (see the comment above).
  project                 = var.project_id
  name                    = var.name
  display_name            = "txt2img rate limits and request cache"
  region                  = var.region
  tier                    = var.tier
  memory_size_gb          = var.memory_size_gb
  redis_version           = var.redis_version
  authorized_network      = var.network_id
  connect_mode            = "DIRECT_PEERING"
  reserved_ip_range       = var.reserved_ip_range
  auth_enabled            = true
  transit_encryption_mode = "DISABLED"
  labels                  = var.labels

  redis_configs = {
    # Rate-limit buckets and cache entries all carry TTLs: evict those first under pressure.
    maxmemory-policy = "volatile-ttl"
  }

  maintenance_policy {
    weekly_maintenance_window {
      day = "SUNDAY"
      start_time {
        hours   = 3
        minutes = 0
      }
    }
  }
}

resource "google_secret_manager_secret" "redis_url" {
  project   = var.project_id
  secret_id = var.url_secret_id
  labels    = var.labels

  replication {
    auto {}
  }
}

# The AUTH string is an attribute of the instance, so it is in Terraform state either way;
# the state bucket is private and versioned (see docs/deploy-cloud-run.md).
resource "google_secret_manager_secret_version" "redis_url" {
  secret      = google_secret_manager_secret.redis_url.id
  secret_data = "redis://:${google_redis_instance.this.auth_string}@${google_redis_instance.this.host}:${google_redis_instance.this.port}/0"
}

resource "google_secret_manager_secret_iam_member" "redis_url_accessors" {
  for_each = var.url_accessor_members

  project   = var.project_id
  secret_id = google_secret_manager_secret.redis_url.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
