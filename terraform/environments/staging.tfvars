# Settings of the staging environment, committed so that Cloud Build applies what a person
# would. The project and the images come from the command line:
#   terraform -chdir=terraform/stack apply -var-file=../environments/staging.tfvars \
#     -var project_id=PROJECT -var api_image=... -var worker_image=...
# Every other variable (terraform/stack/variables.tf) keeps its production default: staging is
# smaller and keeps images for a week.
environment = "staging"

api_min_instances           = 0
api_max_instances           = 5
worker_max_instances        = 1
image_retention_days        = 7
redis_tier                  = "BASIC"
cloud_sql_tier              = "db-custom-1-3840"
cloud_sql_availability_type = "ZONAL"

# region                = "us-central1"
# use_cloud_sql         = false       # true: PostgreSQL instead of Firestore
# worker_platform       = "cloud_run" # or "gke" (terraform/gke/README.md)
