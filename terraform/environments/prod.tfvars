# Settings of the prod environment, committed so that Cloud Build applies what a person would.
# The project and the images come from the command line:
#   terraform -chdir=terraform/stack apply -var-file=../environments/prod.tfvars \
#     -var project_id=PROJECT -var api_image=... -var worker_image=...
# Every other variable (terraform/stack/variables.tf) keeps its default unless set here.
environment = "prod"

# region                = "us-central1"
# use_cloud_sql         = false       # true: PostgreSQL instead of Firestore
# worker_platform       = "cloud_run" # or "gke" (terraform/gke/README.md)
# cors_origins          = ["https://app.example.com"]
# quota_max_in_flight   = 20
# quota_images_per_day  = 1000
