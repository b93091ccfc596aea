# Cloud Run jobs for the fan-out controller, built from the same jobs/<name>/job.yaml files the
# controller validates batches against and the emulator runs, plus the identities, IAM and report bucket
# the controller needs. Nothing here names a job: every job comes from a job.yaml.

locals {
  jobs_dir = coalesce(var.jobs_dir, "${path.module}/../jobs")

  # The defaults of controller.catalog.JobDefinition, for fields a job.yaml leaves out.
  # tests/terraform checks that the two stay equal.
  job_defaults = {
    command       = []
    args          = []
    env           = {}
    secret_env    = {}
    timeout       = "600s"
    max_retries   = 3
    parallelism   = 0
    task_count    = 1
    requires_args = false
    packable      = false
  }
  resource_defaults = {
    cpu    = "1"
    memory = "512Mi"
  }
  secret_defaults = {
    version = "latest"
  }
  # How a job runs on a laptop (local) and the examples the tests run are not Cloud Run settings.
  local_only_fields = ["local", "examples"]

  job_sources = {
    for file in fileset(local.jobs_dir, "*/job.yaml") :
    dirname(file) => yamldecode(file("${local.jobs_dir}/${file}"))
  }

  jobs = {
    for name, source in local.job_sources : name => merge(
      local.job_defaults,
      { for field, value in source : field => value if !contains(local.local_only_fields, field) },
      {
        image      = "${var.image_registry}/${source.image}"
        resources  = merge(local.resource_defaults, try(source.resources, {}))
        secret_env = { for env_name, ref in try(source.secret_env, {}) : env_name => merge(local.secret_defaults, ref) }
      },
    )
  }

  secrets = toset(flatten([for job in values(local.jobs) : [for ref in values(job.secret_env) : ref.secret]]))

  controller_member = "serviceAccount:${google_service_account.controller.email}"
  jobs_member       = "serviceAccount:${google_service_account.jobs.email}"
  object_prefix     = "projects/_/buckets/${google_storage_bucket.reports.name}/objects/"
}

# --- identities -------------------------------------------------------------------------------------

resource "google_service_account" "jobs" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-jobs"
  display_name = "Fan-out jobs"
  description  = "Identity of the fan-out Cloud Run jobs' tasks: reads packed-execution manifests, nothing else."
}

resource "google_service_account" "controller" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-controller"
  display_name = "Fan-out controller"
  description  = "Runs the fan-out jobs with overrides, watches their executions, reads their logs and writes run reports."
}

# --- the jobs ---------------------------------------------------------------------------------------

resource "google_cloud_run_v2_job" "this" {
  for_each = local.jobs

  project             = var.project_id
  location            = var.region
  name                = each.key
  deletion_protection = var.deletion_protection
  labels              = merge(var.labels, { "fanout-job" = each.key })

  template {
    task_count  = each.value.task_count
    parallelism = each.value.parallelism
    labels      = merge(var.labels, { "fanout-job" = each.key })

    template {
      service_account = google_service_account.jobs.email
      timeout         = each.value.timeout
      max_retries     = each.value.max_retries

      containers {
        image = each.value.image
        # Empty means the image's ENTRYPOINT, which is the packed-execution runner in the example jobs.
        command = length(each.value.command) > 0 ? each.value.command : null
        args    = each.value.args

        resources {
          limits = {
            cpu    = each.value.resources.cpu
            memory = each.value.resources.memory
          }
        }

        dynamic "env" {
          for_each = each.value.env
          content {
            name  = env.key
            value = env.value
          }
        }

        dynamic "env" {
          for_each = each.value.secret_env
          content {
            name = env.key
            value_source {
              secret_key_ref {
                secret  = env.value.secret
                version = env.value.version
              }
            }
          }
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = each.value.name == each.key
      error_message = "jobs/${each.key}/job.yaml: name must match its folder (${each.key})."
    }
    precondition {
      condition     = can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", each.key))
      error_message = "jobs/${each.key}: a job name has 1-63 lowercase letters, digits or hyphens and starts with a letter."
    }
  }
}

# --- controller access to the jobs --------------------------------------------------------------------
# Granted on each job, not the project, so the controller can run only these jobs.

# Cloud Run Jobs Executor With Overrides: run.jobs.run, run.jobs.runWithOverrides and
# run.executions.cancel — per-item args/env/task_count/timeout overrides and cancellation, no edits.
resource "google_cloud_run_v2_job_iam_member" "controller_run" {
  for_each = google_cloud_run_v2_job.this

  project  = var.project_id
  location = var.region
  name     = each.value.name
  role     = "roles/run.jobsExecutorWithOverrides"
  member   = local.controller_member
}

# Reads of the job and of its executions and tasks (states, exit codes, attempts), which live under it.
resource "google_cloud_run_v2_job_iam_member" "controller_view" {
  for_each = google_cloud_run_v2_job.this

  project  = var.project_id
  location = var.region
  name     = each.value.name
  role     = "roles/run.viewer"
  member   = local.controller_member
}

# RunJob returns a long-running operation whose name is projects/P/locations/L/operations/ID: it is not
# under the job, so no job-level grant covers waiting on it. A one-permission custom role keeps that
# project-level grant from including anything else.
resource "google_project_iam_custom_role" "operations_reader" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_run_operations_reader"
  title       = "Fan-out: read Cloud Run operations"
  description = "Wait on the long-running operation a Cloud Run RunJob call returns."
  permissions = ["run.operations.get"]
}

resource "google_project_iam_member" "controller_operations" {
  project = var.project_id
  role    = google_project_iam_custom_role.operations_reader.name
  member  = local.controller_member
}

# Running a job with overrides does not change the identity its tasks run as, so the controller needs
# no iam.serviceAccounts.actAs (roles/iam.serviceAccountUser) on the jobs' service account for that.

# One-off items (image + command) need jobs the controller creates and deletes itself: opt in.
resource "google_project_iam_member" "controller_one_off_jobs" {
  count   = var.allow_one_off_jobs ? 1 : 0
  project = var.project_id
  role    = "roles/run.developer"
  member  = local.controller_member
}

# ... and those jobs run as the jobs' service account, never the Compute Engine default one.
resource "google_service_account_iam_member" "controller_acts_as_jobs" {
  count              = var.allow_one_off_jobs ? 1 : 0
  service_account_id = google_service_account.jobs.name
  role               = "roles/iam.serviceAccountUser"
  member             = local.controller_member
}

# --- controller access to the jobs' logs ---------------------------------------------------------------

# A view of the _Default log bucket that shows only Cloud Run job logs of this project (view filters
# cannot OR job names together, so it is all jobs of the project, not only these).
resource "google_logging_log_view" "jobs" {
  count = var.log_access == "view" ? 1 : 0

  name        = "${var.name_prefix}-cloud-run-jobs"
  bucket      = "projects/${var.project_id}/locations/global/buckets/_Default"
  description = "Cloud Run job logs, read by the fan-out controller for per-task log tails."
  filter      = "SOURCE(\"projects/${var.project_id}\") AND resource.type = \"cloud_run_job\""
}

resource "google_logging_log_view_iam_member" "controller_logs" {
  count = var.log_access == "view" ? 1 : 0

  parent   = google_logging_log_view.jobs[0].parent
  location = google_logging_log_view.jobs[0].location
  bucket   = google_logging_log_view.jobs[0].bucket
  name     = google_logging_log_view.jobs[0].name
  role     = "roles/logging.viewAccessor"
  member   = local.controller_member
}

# Opt-in fallback for log readers that query the project rather than a view: log entries have no
# per-job IAM, so reading them without a view means the project-level Logs Viewer role.
resource "google_project_iam_member" "controller_logs_project" {
  count = var.log_access == "project" ? 1 : 0

  project = var.project_id
  role    = "roles/logging.viewer"
  member  = local.controller_member
}

# --- jobs' access to secrets named in job.yaml secret_env -----------------------------------------------

resource "google_secret_manager_secret_iam_member" "jobs_secrets" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = local.jobs_member
}

# --- report bucket ------------------------------------------------------------------------------------

resource "google_storage_bucket" "reports" {
  project                     = var.project_id
  name                        = var.report_bucket_name
  location                    = coalesce(var.bucket_location, var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Reports are the record of what ran: destroying the bucket with objects in it must be deliberate.
  force_destroy = false
  labels        = var.labels

  # A report overwritten or deleted by mistake stays recoverable as a noncurrent version.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age            = var.report_retention_days
      matches_prefix = [var.report_prefix]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.manifest_retention_days
      matches_prefix = [var.manifest_prefix]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  dynamic "logging" {
    for_each = var.access_log_bucket == null ? [] : [var.access_log_bucket]
    content {
      log_bucket        = logging.value
      log_object_prefix = "${var.report_bucket_name}/"
    }
  }

  lifecycle {
    precondition {
      condition     = !startswith(var.report_prefix, var.manifest_prefix) && !startswith(var.manifest_prefix, var.report_prefix)
      error_message = "report_prefix and manifest_prefix must not contain one another: the jobs may read manifests but not reports."
    }
  }
}

# The controller creates, reads, replaces and deletes objects under the report and manifest prefixes
# only. Listing is a bucket-level check that a prefix condition cannot match, so it is not granted:
# the controller addresses every object by name.
resource "google_storage_bucket_iam_member" "controller_objects" {
  bucket = google_storage_bucket.reports.name
  role   = "roles/storage.objectUser"
  member = local.controller_member

  condition {
    title       = "fanout-report-and-manifest-prefixes"
    description = "Only objects under the report and manifest prefixes."
    expression  = "resource.name.startsWith(\"${local.object_prefix}${var.report_prefix}\") || resource.name.startsWith(\"${local.object_prefix}${var.manifest_prefix}\")"
  }
}

# prefect-gcp's GcsBucket (flow results, reports through a block) reads the bucket's metadata before
# each object call; storage.buckets.get alone, on this bucket only.
resource "google_project_iam_custom_role" "bucket_metadata_reader" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_bucket_metadata_reader"
  title       = "Fan-out: read the report bucket's metadata"
  description = "Look the report bucket up (storage.buckets.get), as prefect-gcp's GcsBucket does before each object call."
  permissions = ["storage.buckets.get"]
}

resource "google_storage_bucket_iam_member" "controller_bucket_metadata" {
  bucket = google_storage_bucket.reports.name
  role   = google_project_iam_custom_role.bucket_metadata_reader.name
  member = local.controller_member
}

# Packed tasks read their chunk of the manifest; they cannot see reports or write anything.
resource "google_storage_bucket_iam_member" "jobs_manifests" {
  bucket = google_storage_bucket.reports.name
  role   = "roles/storage.objectViewer"
  member = local.jobs_member

  condition {
    title       = "fanout-manifest-prefix"
    description = "Only objects under the manifest prefix."
    expression  = "resource.name.startsWith(\"${local.object_prefix}${var.manifest_prefix}\")"
  }
}
