output "job_catalog" {
  description = "The job catalog the controller reads (Catalog.from_terraform_output / --catalog FILE): project, region, one entry per job as created, and where reports, manifests and job logs are."
  value = {
    project = var.project_id
    region  = var.region
    jobs = {
      for name, job in google_cloud_run_v2_job.this : name => {
        description     = local.jobs[name].description
        image           = local.jobs[name].image
        command         = local.jobs[name].command
        args            = local.jobs[name].args
        env             = local.jobs[name].env
        secret_env      = local.jobs[name].secret_env
        resources       = local.jobs[name].resources
        timeout         = local.jobs[name].timeout
        max_retries     = local.jobs[name].max_retries
        task_count      = local.jobs[name].task_count
        parallelism     = local.jobs[name].parallelism
        requires_args   = local.jobs[name].requires_args
        packable        = local.jobs[name].packable
        launch_stage    = local.jobs[name].launch_stage
        service_account = local.jobs[name].service_account
        vpc_access      = local.jobs[name].vpc_access
        volumes         = local.jobs[name].volumes
        volume_mounts   = local.jobs[name].volume_mounts
      }
    }
    report_bucket        = google_storage_bucket.reports.name
    report_prefix        = var.report_prefix
    manifest_prefix      = var.manifest_prefix
    log_view             = var.log_access == "view" ? google_logging_log_view.jobs[0].id : null
    jobs_service_account = google_service_account.jobs.email
  }
}

output "job_ids" {
  description = "Full resource name of each Cloud Run job, by job name."
  value       = { for name, job in google_cloud_run_v2_job.this : name => job.id }
}

output "controller_service_account_email" {
  description = "Service account the controller runs as (attach it to the controller's runtime or impersonate it)."
  value       = google_service_account.controller.email
}

output "jobs_service_account_email" {
  description = "Service account the jobs' tasks run as."
  value       = google_service_account.jobs.email
}

output "report_bucket" {
  description = "Name of the report bucket."
  value       = google_storage_bucket.reports.name
}

output "controller_member" {
  description = "IAM member string of the controller's service account (serviceAccount:EMAIL), for grants made outside this module."
  value       = local.controller_member
}

output "jobs_member" {
  description = "IAM member string of the jobs' service account, which jobs without a service_account of their own and one-off jobs run as."
  value       = local.jobs_member
}

output "job_members" {
  description = "IAM member string of the identity each job runs as, by job name (its job.yaml service_account, or the jobs' service account)."
  value       = { for name, identity in local.job_identity : name => local.identity_members[identity] }
}
