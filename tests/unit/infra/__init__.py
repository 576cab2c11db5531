"""Tests that parse the deployment files: Dockerfiles, Compose, Cloud Build, Terraform."""
