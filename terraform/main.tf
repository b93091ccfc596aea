# Cloud Run jobs for the fan-out controller, built from the same jobs/<name>/job.yaml files the
# controller validates batches against and the emulator runs, plus the identities, IAM and report bucket
# the controller needs. Nothing here names a job: every job comes from a job.yaml.

locals {
  jobs_dir = coalesce(var.jobs_dir, "${path.module}/../jobs")

  # The defaults of controller.catalog.JobDefinition, for fields a job.yaml leaves out.
  # tests/terraform checks that the two stay equal.
  job_defaults = {
    command         = []
    args            = []
    env             = {}
    secret_env      = {}
    timeout         = "600s"
    max_retries     = 3
    task_count      = 1
    parallelism     = 0
    requires_args   = false
    packable        = false
    launch_stage    = null
    service_account = null
    vpc_access      = null
    volumes         = []
    volume_mounts   = []
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

  # Who each job runs as: its job.yaml service_account, or the module's jobs account, keyed "jobs" (the
  # account's email is unknown until it exists, and for_each keys must be known at plan time).
  job_identity = { for name, job in local.jobs : name => coalesce(job.service_account, "jobs") }

  # Every identity tasks run as. The jobs account is always one: one-off jobs run as it.
  identity_members = {
    for identity in toset(concat(["jobs"], values(local.job_identity))) :
    identity => identity == "jobs" ? local.jobs_member : "serviceAccount:${identity}"
  }
  # Secret access per identity: the secrets its jobs' secret_env names, plus extra_secret_ids (secrets that
  # batch items and one-off jobs name, which no job.yaml shows) for every identity.
  secret_grants = {
    for grant in distinct(concat(
      flatten([for name, job in local.jobs : [for ref in values(job.secret_env) : { identity = local.job_identity[name], secret = ref.secret }]]),
      [for pair in setproduct(keys(local.identity_members), tolist(var.extra_secret_ids)) : { identity = pair[0], secret = pair[1] }],
    )) : "${grant.identity}/${grant.secret}" => grant
  }

  controller_member = "serviceAccount:${google_service_account.controller.email}"
  jobs_member       = "serviceAccount:${google_service_account.jobs.email}"
  role_prefix       = replace(var.name_prefix, "-", "_")
  bucket_resource   = "projects/_/buckets/${google_storage_bucket.reports.name}"
  object_prefix     = "${local.bucket_resource}/objects/"

  # Item results: <report_prefix><batch id>/results/<file>. IAM Conditions on Cloud Storage offer
  # startsWith, endsWith and extract() on resource.name; extract() of the part between the report prefix
  # and "/results/" is non-empty only for objects in a batch's results folder.
  results_condition = "resource.name.startsWith(\"${local.object_prefix}${var.report_prefix}\") && resource.name.extract(\"${local.object_prefix}${var.report_prefix}{batch}/results/\") != \"\""

  # A listing is checked on the bucket, not on objects: its prefix is the request attribute
  # storage.googleapis.com/objectListPrefix ("" on every other request, so this admits listings only),
  # held to a batch's results folder or a folder in it the same way. gcsfuse lists the folder mounted with
  # only-dir, and with implicit-dirs an item's folder in it before it creates a file there; its layout
  # probe at mount time (GetStorageLayout, on unless the volume passes enable-hns=false) would need listing
  # the whole bucket.
  # An Artifact Registry path, LOCATION-docker.pkg.dev/PROJECT/REPOSITORY[/...], or null for another registry.
  registry = try(regex("^([a-z0-9-]+)-docker\\.pkg\\.dev/([a-z0-9:.-]+)/([a-z0-9._-]+)", var.image_registry), null)

  results_list_condition = "api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${var.report_prefix}\") && api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").extract(\"${var.report_prefix}{batch}/results/\") != \"\""
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
  launch_stage        = each.value.launch_stage

  template {
    task_count  = each.value.task_count
    parallelism = each.value.parallelism
    labels      = merge(var.labels, { "fanout-job" = each.key })

    template {
      service_account = coalesce(each.value.service_account, google_service_account.jobs.email)
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

        dynamic "volume_mounts" {
          for_each = each.value.volume_mounts
          content {
            name       = volume_mounts.value.name
            mount_path = volume_mounts.value.mount_path
          }
        }
      }

      dynamic "volumes" {
        for_each = each.value.volumes
        content {
          name = volumes.value.name

          dynamic "gcs" {
            for_each = try(volumes.value.gcs, null) == null ? [] : [volumes.value.gcs]
            content {
              bucket        = gcs.value.bucket
              read_only     = try(gcs.value.read_only, false)
              mount_options = try(gcs.value.mount_options, null)
            }
          }

          dynamic "empty_dir" {
            for_each = try(volumes.value.empty_dir, null) == null ? [] : [volumes.value.empty_dir]
            content {
              medium     = try(empty_dir.value.medium, "MEMORY")
              size_limit = try(empty_dir.value.size_limit, null)
            }
          }
        }
      }

      dynamic "vpc_access" {
        for_each = each.value.vpc_access == null ? [] : [each.value.vpc_access]
        content {
          connector = try(vpc_access.value.connector, null)
          egress    = try(vpc_access.value.egress, null)

          dynamic "network_interfaces" {
            for_each = try(vpc_access.value.network_interfaces, [])
            content {
              network    = try(network_interfaces.value.network, null)
              subnetwork = try(network_interfaces.value.subnetwork, null)
              tags       = try(network_interfaces.value.tags, null)
            }
          }
        }
      }
    }
  }

  # A job whose tasks read a secret they may not access fails when it runs, not when it is created: create
  # the grants first (the provider's own cloudrunv2_job_secret example does the same).
  # The same holds for pulling images from a registry in another project.
  depends_on = [
    google_secret_manager_secret_iam_member.jobs_secrets,
    google_artifact_registry_repository_iam_member.run_agent_pulls_images,
  ]

  lifecycle {
    precondition {
      condition     = each.value.name == each.key
      error_message = "jobs/${each.key}/job.yaml: name must match its folder (${each.key})."
    }
    precondition {
      condition     = can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", each.key))
      error_message = "jobs/${each.key}: a job name has 1-63 lowercase letters, digits or hyphens and starts with a letter."
    }
    # Rules the catalog also enforces, for a job.yaml it never read: the provider's timeout regex
    # (magic-modules cloudrunv2/Job.yaml), whose own error names only the attribute, and "parallelism
    # must be <= taskCount", which the provider leaves to the API, so it would pass plan and fail apply.
    precondition {
      condition     = can(regex("^[0-9]+(?:\\.[0-9]{1,9})?s$", each.value.timeout))
      error_message = "jobs/${each.key}/job.yaml: timeout must be in seconds with an 's' suffix, e.g. \"900s\" (not \"15m\")."
    }
    precondition {
      condition     = each.value.parallelism <= each.value.task_count
      error_message = "jobs/${each.key}/job.yaml: parallelism must not exceed task_count."
    }
  }
}

# --- pulling the images ---------------------------------------------------------------------------------
# Cloud Run pulls a job's image as the project's Cloud Run service agent, which can read Artifact Registry
# repositories of its own project only. With images in another project's repository, grant_registry_access
# gives it Artifact Registry Reader on that one repository.

data "google_project" "this" {
  count      = var.grant_registry_access ? 1 : 0
  project_id = var.project_id
}

resource "google_artifact_registry_repository_iam_member" "run_agent_pulls_images" {
  count = var.grant_registry_access ? 1 : 0

  project    = local.registry[1]
  location   = local.registry[0]
  repository = local.registry[2]
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:service-${data.google_project.this[0].number}@serverless-robot-prod.iam.gserviceaccount.com"

  lifecycle {
    precondition {
      condition     = local.registry != null
      error_message = "grant_registry_access needs an Artifact Registry image_registry (LOCATION-docker.pkg.dev/PROJECT/REPOSITORY); grant other registries' read access outside this module."
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

# Reads of the job's executions and tasks (states, exit codes, attempts), which live under it: a custom role
# with the three calls controller/cloudrun.py makes. roles/run.viewer would add run.jobs.get, run.tasks.get
# and the IAM policy reads, which nothing here calls.
resource "google_project_iam_custom_role" "job_reader" {
  project     = var.project_id
  role_id     = "${local.role_prefix}_job_reader"
  title       = "Fan-out: watch job executions"
  description = "Read a job's executions and list their tasks, granted on each fan-out job."
  permissions = [
    "run.executions.get",  # GetExecution
    "run.executions.list", # ListExecutions
    "run.tasks.list",      # ListTasks
  ]
}

resource "google_cloud_run_v2_job_iam_member" "controller_view" {
  for_each = google_cloud_run_v2_job.this

  project  = var.project_id
  location = var.region
  name     = each.value.name
  role     = google_project_iam_custom_role.job_reader.name
  member   = local.controller_member
}

# RunJob's answer carries the execution in its metadata, so the controller never reads the operation: no
# project-level run.operations.get (operations are not under the job, so only a project grant covers them).

# One-off items (image + command) run in jobs the controller creates, runs and deletes itself: opt in.
# Cloud Run does not evaluate IAM Conditions on resource names, and a job that does not exist yet cannot
# hold a grant, so this is a project-level custom role with only the calls controller/cloudrun.py makes for
# such a job — no update, no IAM policy, nothing on services or worker pools. It still reaches every job of
# the project: see "What this module will not do" in README.md.
resource "google_project_iam_custom_role" "one_off_jobs" {
  count = var.allow_one_off_jobs ? 1 : 0

  project     = var.project_id
  role_id     = "${local.role_prefix}_one_off_jobs"
  title       = "Fan-out: one-off jobs"
  description = "Create, run, watch, cancel and delete the controller's own one-off Cloud Run jobs."
  permissions = [
    "run.executions.cancel",     # CancelExecution
    "run.executions.get",        # GetExecution
    "run.executions.list",       # ListExecutions
    "run.jobs.create",           # CreateJob
    "run.jobs.delete",           # DeleteJob
    "run.jobs.get",              # GetJob (did an ambiguous CreateJob land?)
    "run.jobs.run",              # RunJob
    "run.jobs.runWithOverrides", # RunJob with per-item overrides
    "run.operations.get",        # CreateJob's operation, waited on before the job is run
    "run.tasks.list",            # ListTasks
  ]
}

resource "google_project_iam_member" "controller_one_off_jobs" {
  count   = var.allow_one_off_jobs ? 1 : 0
  project = var.project_id
  role    = google_project_iam_custom_role.one_off_jobs[0].name
  member  = local.controller_member
}

# ... and those jobs run as the jobs' service account (CreateJob checks iam.serviceAccounts.actAs on it),
# never the Compute Engine default one.
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

# --- the jobs' access to secrets ------------------------------------------------------------------------
# Cloud Run reads a secret_env value as the identity the task runs as, when the task starts.

resource "google_secret_manager_secret_iam_member" "jobs_secrets" {
  for_each = local.secret_grants

  project   = var.project_id
  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = local.identity_members[each.value.identity]
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

  # Versioning already keeps a deleted object noncurrent_retention_days; soft delete (7 days unless set)
  # would keep it, and bill it, that much longer again once the lifecycle rules remove it. Off by default.
  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_days * 86400
  }

  lifecycle_rule {
    condition {
      age            = var.report_retention_days
      matches_prefix = [var.report_prefix]
      # Only the live version: the delete makes it noncurrent, and the noncurrent rule below removes it
      # noncurrent_retention_days later. Without with_state an age rule matches archived versions too
      # (their age counts from their creation), so they would go the same day.
      with_state = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.manifest_retention_days
      matches_prefix = [var.manifest_prefix]
      with_state     = "LIVE"
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

  # The bucket's first write with a default key needs the Cloud Storage service agent's grant on it.
  depends_on = [google_kms_crypto_key_iam_member.storage_agent_uses_key]

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
    # Cloud Storage uses a default key only from the bucket's own location; the multi-region EU is
    # "europe" in Cloud KMS, US and ASIA are "us" and "asia" in both.
    precondition {
      condition     = var.kms_key_name == null || try(regex("/locations/([^/]+)/", var.kms_key_name)[0], "") == lookup({ eu = "europe" }, lower(coalesce(var.bucket_location, var.region)), lower(coalesce(var.bucket_location, var.region)))
      error_message = "kms_key_name must be a key in the bucket's location (${lower(coalesce(var.bucket_location, var.region))}); Cloud Storage cannot use a key from another location."
    }
    precondition {
      condition     = !startswith(var.spec_prefix, var.manifest_prefix)
      error_message = "spec_prefix must not be inside manifest_prefix: the jobs may read manifests but not batch specs."
    }
  }
}

# A customer-managed key encrypts the bucket only once the Cloud Storage service agent may use it.
data "google_storage_project_service_account" "storage_agent" {
  count   = var.kms_key_name == null ? 0 : 1
  project = var.project_id
}

resource "google_kms_crypto_key_iam_member" "storage_agent_uses_key" {
  count         = var.kms_key_name == null ? 0 : 1
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.storage_agent[0].email_address}"
}

# --- object access: custom roles with the object calls the code makes --------------------------------
# roles/storage.objectUser would add folder, managed-folder, multipart-upload and move permissions that
# nothing here uses. Every grant below is on this bucket only, with a condition on the object's name.

# Reports, batch state and manifests: written (create; delete to replace an object that exists), read back
# by name, and results listed by the collector.
resource "google_project_iam_custom_role" "controller_objects" {
  project     = var.project_id
  role_id     = "${local.role_prefix}_controller_objects"
  title       = "Fan-out: controller objects"
  description = "Write, replace, read and list the fan-out controller's objects."
  permissions = ["storage.objects.create", "storage.objects.delete", "storage.objects.get", "storage.objects.list"]
}

# Read one object by name: batch specs for the controller, manifest chunks for the tasks.
resource "google_project_iam_custom_role" "object_reader" {
  project     = var.project_id
  role_id     = "${local.role_prefix}_object_reader"
  title       = "Fan-out: read objects by name"
  description = "Read an object whose name is known (no listing)."
  permissions = ["storage.objects.get"]
}

# Item results: the runner writes create-only (ifGenerationMatch=0, so its retries never replace an object);
# a one-off task writes through a Cloud Storage FUSE volume, which looks a file up and lists its folder
# before it creates it, and replaces the file an earlier attempt of a retried task wrote (an overwrite is
# checked against storage.objects.delete).
resource "google_project_iam_custom_role" "result_writer" {
  project     = var.project_id
  role_id     = "${local.role_prefix}_result_writer"
  title       = "Fan-out: write item results"
  description = "Create and replace result objects; look them up and list a results folder through a Cloud Storage volume."
  permissions = ["storage.objects.create", "storage.objects.delete", "storage.objects.get", "storage.objects.list"]
}

resource "google_storage_bucket_iam_member" "controller_objects" {
  bucket = google_storage_bucket.reports.name
  role   = google_project_iam_custom_role.controller_objects.name
  member = local.controller_member

  condition {
    title       = "fanout-report-and-manifest-prefixes"
    description = "Objects under the report and manifest prefixes, and listings of results folders."
    expression  = "resource.name.startsWith(\"${local.object_prefix}${var.report_prefix}\") || resource.name.startsWith(\"${local.object_prefix}${var.manifest_prefix}\") || (${local.results_list_condition})"
  }
}

# Batch specs given as gs://<bucket>/<spec_prefix>... (fanout run gs://..., the flow's batch parameter).
resource "google_storage_bucket_iam_member" "controller_specs" {
  bucket = google_storage_bucket.reports.name
  role   = google_project_iam_custom_role.object_reader.name
  member = local.controller_member

  condition {
    title       = "fanout-spec-prefix"
    description = "Only objects under the spec prefix."
    expression  = "resource.name.startsWith(\"${local.object_prefix}${var.spec_prefix}\")"
  }
}

# prefect-gcp's GcsBucket (flow results, reports through a block) reads the bucket's metadata before
# each object call; storage.buckets.get alone, on this bucket only.
resource "google_project_iam_custom_role" "bucket_metadata_reader" {
  project     = var.project_id
  role_id     = "${local.role_prefix}_bucket_metadata_reader"
  title       = "Fan-out: read the report bucket's metadata"
  description = "Look the report bucket up (storage.buckets.get), as prefect-gcp's GcsBucket does before each object call."
  permissions = ["storage.buckets.get"]
}

resource "google_storage_bucket_iam_member" "controller_bucket_metadata" {
  bucket = google_storage_bucket.reports.name
  role   = google_project_iam_custom_role.bucket_metadata_reader.name
  member = local.controller_member
}

# Packed tasks read their chunk of the manifest, by name; they cannot see reports.
resource "google_storage_bucket_iam_member" "jobs_manifests" {
  for_each = local.identity_members

  bucket = google_storage_bucket.reports.name
  role   = google_project_iam_custom_role.object_reader.name
  member = each.value

  condition {
    title       = "fanout-manifest-prefix"
    description = "Only objects under the manifest prefix."
    expression  = "resource.name.startsWith(\"${local.object_prefix}${var.manifest_prefix}\")"
  }
}

# Tasks write their item's result under <report_prefix><batch>/results/, through the runner or a
# Cloud Storage volume mounted at that folder; nothing else under the report prefix.
resource "google_storage_bucket_iam_member" "jobs_results" {
  for_each = local.identity_members

  bucket = google_storage_bucket.reports.name
  role   = google_project_iam_custom_role.result_writer.name
  member = each.value

  condition {
    title       = "fanout-results-folders"
    description = "Only objects in a batch's results/ folder under the report prefix, and listings of it."
    expression  = "(${local.results_condition}) || (${local.results_list_condition})"
  }
}

# --- teardown -------------------------------------------------------------------------------------------
# The provider refuses to delete a job with deletion_protection, but only when it gets to the job: a plain
# `terraform destroy` would first remove the grants, roles, log view and bucket, then stop with the jobs and
# their service account left. Destroy order is the reverse of dependencies, so this guard, which depends on
# everything here, is destroyed first, and while deletion_protection is on it fails before anything is gone.
# Tear down with deletion_protection = false: apply it, then destroy (README.md, "Tearing down").
resource "terraform_data" "destroy_guard" {
  input = var.deletion_protection

  provisioner "local-exec" {
    when    = destroy
    command = self.input ? "echo 'deletion_protection is on: terraform apply -var deletion_protection=false first, then destroy' >&2; exit 1" : "true"
  }

  depends_on = [
    google_service_account.jobs,
    google_service_account.controller,
    google_cloud_run_v2_job.this,
    google_artifact_registry_repository_iam_member.run_agent_pulls_images,
    google_cloud_run_v2_job_iam_member.controller_run,
    google_project_iam_custom_role.job_reader,
    google_cloud_run_v2_job_iam_member.controller_view,
    google_project_iam_custom_role.one_off_jobs,
    google_project_iam_member.controller_one_off_jobs,
    google_service_account_iam_member.controller_acts_as_jobs,
    google_logging_log_view.jobs,
    google_logging_log_view_iam_member.controller_logs,
    google_project_iam_member.controller_logs_project,
    google_secret_manager_secret_iam_member.jobs_secrets,
    google_storage_bucket.reports,
    google_kms_crypto_key_iam_member.storage_agent_uses_key,
    google_project_iam_custom_role.controller_objects,
    google_project_iam_custom_role.object_reader,
    google_project_iam_custom_role.result_writer,
    google_storage_bucket_iam_member.controller_objects,
    google_storage_bucket_iam_member.controller_specs,
    google_project_iam_custom_role.bucket_metadata_reader,
    google_storage_bucket_iam_member.controller_bucket_metadata,
    google_storage_bucket_iam_member.jobs_manifests,
    google_storage_bucket_iam_member.jobs_results,
  ]
}
