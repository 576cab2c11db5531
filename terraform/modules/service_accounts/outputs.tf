output "emails" {
  description = "Account emails by role: api, worker, push_invoker, scheduler, build."
  value       = { for key, account in google_service_account.this : key => account.email }
}

output "ids" {
  description = "Account resource names (projects/PROJECT/serviceAccounts/EMAIL) by role, for service-account IAM."
  value       = { for key, account in google_service_account.this : key => account.name }
}

output "members" {
  description = "IAM members (serviceAccount:EMAIL) by role."
  value       = { for key, account in google_service_account.this : key => "serviceAccount:${account.email}" }
}
