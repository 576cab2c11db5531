variable "project_id" {
  description = "Project that holds the repository."
  type        = string
}

variable "region" {
  description = "Region of the repository (images are addressed as REGION-docker.pkg.dev/...)."
  type        = string
}

variable "repository_id" {
  description = "Repository name; Cloud Build pushes to REGION-docker.pkg.dev/PROJECT/REPOSITORY_ID."
  type        = string
  default     = "txt2img"
}

variable "immutable_tags" {
  description = "Refuse to move an existing tag to another image. Off by default: a retried build re-pushes its $SHORT_SHA tag."
  type        = bool
  default     = false
}

variable "keep_recent_versions" {
  description = "Number of most recent versions of each image that cleanup never deletes."
  type        = number
  default     = 20

  validation {
    condition     = var.keep_recent_versions >= 1
    error_message = "keep_recent_versions must be at least 1."
  }
}

variable "delete_older_than_days" {
  description = "Versions older than this many days (and not among the most recent ones kept) are deleted."
  type        = number
  default     = 90

  validation {
    condition     = var.delete_older_than_days >= 1
    error_message = "delete_older_than_days must be at least 1."
  }
}

variable "writer_members" {
  description = "Members allowed to push, keyed by a static label (e.g. { build = \"serviceAccount:...\" })."
  type        = map(string)
  default     = {}
}

variable "reader_members" {
  description = "Members allowed to pull, keyed by a static label. Cloud Run's service agent in the same project needs no grant."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels put on the repository."
  type        = map(string)
  default     = {}
}
