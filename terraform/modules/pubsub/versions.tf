terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.40, < 7.0"
    }
    # google_project_service_identity (creates the Pub/Sub service agent before IAM names it).
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.40, < 7.0"
    }
  }
}
