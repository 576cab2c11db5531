output "cluster_name" {
  description = "Name of the cluster."
  value       = google_container_cluster.this.name
}

output "get_credentials_command" {
  description = "Points kubectl at the cluster through its DNS-based endpoint (IAM-authorized, reachable from anywhere)."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --region ${var.region} --project ${var.project_id} --dns-endpoint"
}

output "namespace" {
  description = "Namespace of the worker (kubectl -n NAMESPACE get deploy,scaledobject,pods)."
  value       = var.namespace
}

output "autoscaler" {
  description = "Which autoscaler autoscaling_manifest targets the worker with: keda or hpa."
  value       = var.autoscaler
}

output "worker_manifest" {
  description = "Namespace, service account, SecretProviderClass and Deployment of the worker (no replica count: the autoscaler owns it); deploy.sh applies it with kubectl apply --server-side."
  value       = templatefile("${path.module}/manifests/gpu-worker.yaml.tftpl", local.template_vars)
}

output "autoscaling_manifest" {
  description = "The autoscaler's objects for var.autoscaler: keda_manifest or hpa_manifest (deploy.sh applies it after worker_manifest)."
  value       = templatefile("${path.module}/manifests/${local.autoscaling_templates[var.autoscaler]}", local.template_vars)
}

output "keda_manifest" {
  description = "KEDA TriggerAuthentication and ScaledObject (0..max_gpu_nodes replicas on the pull subscription's backlog); apply after installing KEDA."
  value       = templatefile("${path.module}/manifests/keda-scaledobject.yaml.tftpl", local.template_vars)
}

output "hpa_manifest" {
  description = "Alternative to KEDA: an HPA on the external metric pubsub.googleapis.com|subscription|num_undelivered_messages through the Custom Metrics Stackdriver Adapter (min 1 replica)."
  value       = templatefile("${path.module}/manifests/hpa-stackdriver.yaml.tftpl", local.template_vars)
}

output "keda_install_command" {
  description = "Installs KEDA with Helm (run once per cluster, before applying keda_manifest)."
  value       = "helm repo add kedacore https://kedacore.github.io/charts && helm repo update && helm upgrade --install keda kedacore/keda --namespace keda --create-namespace --version ${var.keda_version}"
}
