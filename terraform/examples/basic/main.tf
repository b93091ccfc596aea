# The fan-out jobs from the repository's jobs/ folder, ready for the controller:
#   terraform apply
#   terraform output -json job_catalog > job_catalog.json
#   fanout run --catalog job_catalog.json batch.yaml

provider "google" {
  project = var.project_id
  region  = var.region
}

module "fanout" {
  source = "../.."

  project_id         = var.project_id
  region             = var.region
  image_registry     = var.image_registry
  report_bucket_name = var.report_bucket_name

  # The controller may create, run and delete its own jobs for one-off items (image + command), as
  # examples/mixed.yaml has.
  allow_one_off_jobs = true

  # Set to false and apply before `terraform destroy`: until then a destroy stops before removing anything.
  deletion_protection = var.deletion_protection
  # jobs_dir is left at its default: the repository's jobs/ folder, the controller's own source.
}
