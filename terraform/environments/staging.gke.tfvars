# Settings of the staging GPU worker on GKE (terraform/gke), used only while the worker_platform
# of staging.tfvars is "gke". Committed so that Cloud Build (deploy-staging-gke, running
# terraform/gke/deploy.sh) applies what a person would. The project, region, state bucket and
# worker image come from TF_VAR_* (terraform/gke/README.md). Every other variable
# (terraform/gke/variables.tf) keeps its default unless set here.
environment = "staging"

# max_gpu_nodes              = 3       # L4 nodes at most; KEDA's maxReplicaCount
# gpu_spot                   = false   # Spot L4 nodes (preempted jobs are redelivered)
# gpu_zones                  = ["us-central1-a", "us-central1-b", "us-central1-c"]
# autoscaler                 = "keda"  # or "hpa" (one L4 node always up)
# mount_models_bucket        = false   # true: the models bucket through Cloud Storage FUSE
# shutdown_grace_seconds     = 540     # SHUTDOWN_GRACE_S: running jobs' time to finish
# master_authorized_networks = [{ cidr_block = "203.0.113.10/32", display_name = "admin" }] # IP endpoint only
