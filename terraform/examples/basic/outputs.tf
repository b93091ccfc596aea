output "job_catalog" {
  description = "The job catalog for the controller (terraform output -json job_catalog)."
  value       = module.fanout.job_catalog
}

output "controller_service_account_email" {
  description = "Service account to run the controller as."
  value       = module.fanout.controller_service_account_email
}
