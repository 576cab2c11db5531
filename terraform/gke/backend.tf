# Separate state from the environment it extends. One GKE state per environment:
#   terraform -chdir=terraform/gke init -backend-config="bucket=$STATE_BUCKET" -backend-config="prefix=txt2img/gke/staging"
terraform {
  backend "gcs" {
    bucket = "txt2img-terraform-state"
    prefix = "txt2img/gke/staging"
  }
}
