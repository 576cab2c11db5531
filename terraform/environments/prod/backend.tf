# State lives in a versioned, private Cloud Storage bucket created once by hand (see
# docs/deploy-cloud-run.md, "Bootstrap"). Override the bucket at init:
#   terraform -chdir=terraform/environments/prod init -backend-config="bucket=$STATE_BUCKET"
terraform {
  backend "gcs" {
    bucket = "txt2img-terraform-state"
    prefix = "txt2img/prod"
  }
}
