# State lives in a versioned, private Cloud Storage bucket created once by hand per project
# (docs/deploy-cloud-run.md, "Bootstrap"). The backend is a partial configuration: the
# environment's prefix comes from environments/ENV.gcs.tfbackend, the bucket from the command
# line, and each environment keeps its own .terraform directory (TF_DATA_DIR):
#   export TF_DATA_DIR="$PWD/.terraform-staging"
#   terraform -chdir=terraform/stack init -reconfigure \
#     -backend-config=../environments/staging.gcs.tfbackend -backend-config="bucket=$STATE_BUCKET"
terraform {
  backend "gcs" {}
}
