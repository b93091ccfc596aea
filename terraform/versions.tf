terraform {
  # 1.5: `check` blocks; optional() and cross-object preconditions are older.
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 7.31.0 is the lowest release the suite plans against (tests/terraform/test_terraform_cli.py): the
      # one below it that the provider's prebuilt bindings give, 6.50.0, has no volumes.gcs.mount_options.
      # A new major is a deliberate upgrade with its own guide.
      version = "~> 7.31"
    }
  }
}
