terraform {
  # 1.5: `check` blocks; optional() and cross-object preconditions are older.
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 7.x is the current major; a new major is a deliberate upgrade with its own guide.
      version = "~> 7.0"
    }
  }
}
