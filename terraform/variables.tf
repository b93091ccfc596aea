variable "project_id" {
  description = "ID of the Google Cloud project the jobs, service accounts and report bucket live in."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 lowercase letters, digits or hyphens, starting with a letter), not a project number or name."
  }
}

variable "region" {
  description = "Cloud Run region for the jobs, e.g. europe-west1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Cloud Run region such as europe-west1 or us-central1."
  }
}

variable "image_registry" {
  description = "Registry path the images in jobs/*/job.yaml are relative to, e.g. europe-west1-docker.pkg.dev/my-project/fanout-jobs (no trailing slash)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$", var.image_registry))
    error_message = "image_registry must be a registry host with an optional path, in lowercase, without a scheme or trailing slash."
  }
}

variable "jobs_dir" {
  description = "Folder holding one <name>/job.yaml per job. Null means the jobs/ folder next to this module, the same files the controller and the emulator read."
  type        = string
  default     = null

  validation {
    condition     = var.jobs_dir == null || length(trimspace(coalesce(var.jobs_dir, " "))) > 0
    error_message = "jobs_dir must be null or a non-empty path."
  }
}

variable "name_prefix" {
  description = "Prefix of the service account IDs and the custom role (3-19 lowercase letters, digits or hyphens)."
  type        = string
  default     = "fanout"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,17}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-19 lowercase letters, digits or hyphens, start with a letter and not end with a hyphen, so that \"<prefix>-controller\" is a valid service account ID."
  }
}

variable "report_bucket_name" {
  description = "Name of the bucket created for run reports and packed-execution manifests (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.report_bucket_name)) && !startswith(var.report_bucket_name, "goog") && !strcontains(var.report_bucket_name, "google")
    error_message = "report_bucket_name must be 3-63 lowercase letters, digits, hyphens or underscores, start and end with a letter or digit, and must not start with \"goog\" or contain \"google\"."
  }
}

variable "bucket_location" {
  description = "Location of the report bucket. Null means the jobs' region, which keeps task reads of manifests in-region."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_location == null || can(regex("^[A-Za-z0-9-]+$", coalesce(var.bucket_location, "x")))
    error_message = "bucket_location must be a GCS location such as EU, europe-west1 or eur4."
  }
}

variable "report_prefix" {
  description = "Object prefix the controller writes run reports under; its write access is limited to this prefix and manifest_prefix."
  type        = string
  default     = "fanout/reports/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", var.report_prefix))
    error_message = "report_prefix must be a relative object prefix ending in \"/\", e.g. fanout/reports/."
  }
}

variable "manifest_prefix" {
  description = "Object prefix for packed-execution manifests: the controller writes there and the jobs' service account may only read there."
  type        = string
  default     = "fanout/manifests/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", var.manifest_prefix))
    error_message = "manifest_prefix must be a relative object prefix ending in \"/\", e.g. fanout/manifests/."
  }
}

variable "report_retention_days" {
  description = "Days after which a report is deleted (it then stays recoverable as a noncurrent version for noncurrent_retention_days)."
  type        = number
  default     = 365

  validation {
    condition     = var.report_retention_days >= 1 && floor(var.report_retention_days) == var.report_retention_days
    error_message = "report_retention_days must be a whole number of days >= 1."
  }
}

variable "manifest_retention_days" {
  description = "Days after which a manifest is deleted; manifests are only read while their execution runs (at most 7 days, Cloud Run's task timeout limit)."
  type        = number
  default     = 14

  validation {
    condition     = var.manifest_retention_days >= 8 && floor(var.manifest_retention_days) == var.manifest_retention_days
    error_message = "manifest_retention_days must be a whole number >= 8, longer than the longest possible execution."
  }
}

variable "noncurrent_retention_days" {
  description = "Days a replaced or deleted object version is kept before it is removed for good."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_retention_days >= 1 && floor(var.noncurrent_retention_days) == var.noncurrent_retention_days
    error_message = "noncurrent_retention_days must be a whole number of days >= 1."
  }
}

variable "kms_key_name" {
  description = "Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) to encrypt the report bucket with; null means Google-managed encryption."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", coalesce(var.kms_key_name, "x")))
    error_message = "kms_key_name must be a full Cloud KMS crypto key name."
  }
}

variable "access_log_bucket" {
  description = "Existing bucket that receives usage and storage logs of the report bucket; null turns access logging off."
  type        = string
  default     = null
}

variable "log_access" {
  description = "How the controller reads job logs: \"view\" grants roles/logging.viewAccessor on a log view that shows only Cloud Run job logs (query it by the job_catalog's log_view); \"project\" grants roles/logging.viewer on the whole project."
  type        = string
  default     = "view"

  validation {
    condition     = contains(["view", "project"], var.log_access)
    error_message = "log_access must be \"view\" or \"project\"."
  }
}

variable "deletion_protection" {
  description = "Refuse to destroy the Cloud Run jobs (the provider's deletion_protection), and stop a terraform destroy before it removes anything; apply with false first to tear an environment down."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every job and the bucket."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "Label keys must start with a lowercase letter; keys and values use lowercase letters, digits, '_' or '-' (at most 63 characters)."
  }
}

variable "allow_one_off_jobs" {
  description = "Let the controller create, run and delete its own jobs for one-off batch items (image + command). A job that does not exist yet cannot hold a grant and Cloud Run ignores IAM Conditions on names, so this grants a project-level custom role with the ten permissions those calls need (no update, no IAM policy, no services), plus roles/iam.serviceAccountUser on the jobs' service account, which one-off jobs run as."
  type        = bool
  default     = false
}

variable "spec_prefix" {
  description = "Object prefix in the report bucket the controller may read batch specs from (fanout run gs://BUCKET/<spec_prefix>nightly.yaml); read by name only."
  type        = string
  default     = "fanout/specs/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", var.spec_prefix))
    error_message = "spec_prefix must be a relative object prefix ending in \"/\", e.g. fanout/specs/."
  }
}

variable "extra_secret_ids" {
  description = "Secret Manager secrets (IDs in this project, or projects/P/secrets/S) that batch items or one-off jobs name in secret_env although no job.yaml does; every identity the tasks run as may read them."
  type        = set(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.extra_secret_ids : can(regex("^(projects/[^/]+/secrets/)?[A-Za-z0-9_-]{1,255}$", id))])
    error_message = "extra_secret_ids must be secret IDs (letters, digits, '_' or '-') or projects/PROJECT/secrets/ID."
  }
}

variable "grant_registry_access" {
  description = "Grant the project's Cloud Run service agent Artifact Registry Reader on the image_registry repository, which it needs to pull the jobs' images when that repository is in another project (within the project it can already)."
  type        = bool
  default     = false
}

variable "soft_delete_retention_days" {
  description = "Days Cloud Storage keeps, and bills, an object after it is deleted for good (soft delete). 0 turns it off: versioning already keeps deleted reports noncurrent_retention_days."
  type        = number
  default     = 0

  validation {
    condition     = var.soft_delete_retention_days == 0 || (var.soft_delete_retention_days >= 7 && var.soft_delete_retention_days <= 90 && floor(var.soft_delete_retention_days) == var.soft_delete_retention_days)
    error_message = "soft_delete_retention_days must be 0 (off) or a whole number of days from 7 to 90."
  }
}
