#!/usr/bin/env bash
# Deploys the GPU worker of one environment to GKE: applies terraform/gke with the environment's
# settings (terraform/environments/ENV.gke.tfvars) and the worker image, then applies the
# rendered Kubernetes objects and waits for the Deployment's rollout. Cloud Build runs it
# (cloudbuild.yaml: deploy-staging-gke, deploy-prod-gke) when the environment's worker_platform
# output is "gke"; a person runs the same script (terraform/gke/README.md):
#
#   export TF_VAR_project_id=PROJECT TF_VAR_region=us-central1 \
#     TF_VAR_state_bucket=PROJECT-txt2img-tfstate \
#     TF_VAR_worker_image=us-central1-docker.pkg.dev/PROJECT/txt2img/gpu-worker:TAG
#   terraform/gke/deploy.sh staging
#
# A new image rolls the pods (maxSurge 1, maxUnavailable 0): the Deployment names no replica
# count, so the autoscaler's count is kept, and a stopping pod finishes its running jobs.
# Needs: terraform, gcloud, kubectl with gke-gcloud-auth-plugin. ROLLOUT_TIMEOUT (default 30m)
# bounds the wait; AUTO_APPROVE=true skips terraform's confirmation (Cloud Build sets it).
set -euo pipefail

environment="${1:-}"
if [[ "${environment}" != "staging" && "${environment}" != "prod" ]]; then
  echo "usage: terraform/gke/deploy.sh staging|prod (with TF_VAR_project_id, TF_VAR_region," \
    "TF_VAR_state_bucket and TF_VAR_worker_image set)" >&2
  exit 2
fi
: "${TF_VAR_project_id:?is not set}" "${TF_VAR_region:?is not set}"
: "${TF_VAR_state_bucket:?is not set}" "${TF_VAR_worker_image:?is not set}"

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# This configuration's own .terraform per environment; the environment's (terraform/stack)
# TF_DATA_DIR and TF_CLI_ARGS_*, if this shell has them, must not leak in.
export TF_DATA_DIR="${PWD}/.terraform-gke-${environment}"
unset TF_CLI_ARGS TF_CLI_ARGS_init TF_CLI_ARGS_plan TF_CLI_ARGS_apply TF_CLI_ARGS_output
approve=()
if [[ "${AUTO_APPROVE:-}" == "true" ]]; then
  approve=(-auto-approve)
fi

echo "--- terraform/gke (${environment}): cluster, node pools, IAM; worker image ${TF_VAR_worker_image}"
terraform -chdir=terraform/gke init -reconfigure \
  "-backend-config=../environments/${environment}.gke.gcs.tfbackend" \
  "-backend-config=bucket=${TF_VAR_state_bucket}"
# (${approve[@]+...}: an empty array under set -u, for the bash 3.2 of macOS too)
terraform -chdir=terraform/gke apply ${approve[@]+"${approve[@]}"} \
  "-var-file=../environments/${environment}.gke.tfvars"

output() { terraform -chdir=terraform/gke output -raw "$1"; }
cluster="$(output cluster_name)"
namespace="$(output namespace)"
autoscaler="$(output autoscaler)"
manifests="$(mktemp -d)"
trap 'rm -rf "${manifests}"' EXIT
output worker_manifest > "${manifests}/1-worker.yaml"
output autoscaling_manifest > "${manifests}/2-autoscaling.yaml"

echo "--- kubectl: cluster ${cluster} through its DNS endpoint"
gcloud container clusters get-credentials "${cluster}" \
  --region "${TF_VAR_region}" --project "${TF_VAR_project_id}" --dns-endpoint

# The autoscaler is installed once per cluster by a person (README, first apply).
case "${autoscaler}" in
  keda)
    if ! kubectl get crd scaledobjects.keda.sh >/dev/null; then
      echo "KEDA is not installed in ${cluster}: run the command of" \
        "'terraform -chdir=terraform/gke output -raw keda_install_command' once" \
        "(terraform/gke/README.md, first apply)" >&2
      exit 1
    fi
    ;;
  hpa)
    if ! kubectl get apiservice v1beta1.external.metrics.k8s.io >/dev/null; then
      echo "The Custom Metrics Stackdriver Adapter is not installed in ${cluster}" \
        "(terraform/gke/README.md, the HPA alternative)" >&2
      exit 1
    fi
    ;;
  *)
    echo "unknown autoscaler '${autoscaler}' (terraform/gke: keda or hpa)" >&2
    exit 1
    ;;
esac

echo "--- kubectl apply: worker, then its ${autoscaler} autoscaling"
# Server-side apply under one field manager: the manifests own the fields they name and
# nothing else, so the replica count stays the autoscaler's. --force-conflicts takes back a
# field someone changed by hand (kubectl edit), as a deploy should.
kubectl apply --server-side --field-manager=txt2img-deploy --force-conflicts \
  -f "${manifests}/1-worker.yaml" -f "${manifests}/2-autoscaling.yaml"

echo "--- rollout of deployment/gpu-worker (timeout ${ROLLOUT_TIMEOUT:-30m})"
kubectl -n "${namespace}" rollout status deployment/gpu-worker --timeout="${ROLLOUT_TIMEOUT:-30m}"
scaler="scaledobject/gpu-worker"
[[ "${autoscaler}" == "hpa" ]] && scaler="hpa/gpu-worker"
kubectl -n "${namespace}" get deployment/gpu-worker "${scaler}" -o wide
