variable "project_id" {
  description = "ID of the project to create the jobs in."
  type        = string
}

variable "region" {
  description = "Cloud Run region for the jobs."
  type        = string
  default     = "europe-west1"
}

variable "image_registry" {
  description = "Artifact Registry path the job images were pushed to, e.g. europe-west1-docker.pkg.dev/my-project/fanout-jobs."
  type        = string
}

variable "report_bucket_name" {
  description = "Globally unique name for the report bucket."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse to delete the Cloud Run jobs; set to false and apply once before terraform destroy."
  type        = bool
  default     = true
}
