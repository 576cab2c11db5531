# Separate state from the environment it extends, one per environment, in the environment's
# state bucket: a partial configuration, completed at init time by the environment's
# terraform/environments/ENV.gke.gcs.tfbackend (prefix txt2img/gke/ENV) and the bucket:
#   terraform -chdir=terraform/gke init -reconfigure \
#     -backend-config=../environments/staging.gke.gcs.tfbackend -backend-config="bucket=$STATE_BUCKET"
terraform {
  backend "gcs" {}
}
