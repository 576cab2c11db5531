"""Builds the Cloud Storage blob store from settings."""

from __future__ import annotations

from google.cloud.storage.retry import DEFAULT_RETRY

from dal.gcs.blob_store import GcsBlobStore
from dal.gcs.client import make_storage_client
from dal.gcs.signing import make_url_signer
from dal.settings import Settings


def build_gcs_blob_store(settings: Settings) -> GcsBlobStore:
    # A key file wins (the emulator); otherwise URLs are signed through IAM signBlob as the
    # runtime's service account, with no key material on disk (Cloud Run).
    signer = make_url_signer(
        key_file=settings.gcs_signing_key_file,
        service_account_email=settings.gcs_signing_service_account,
    )
    store = GcsBlobStore(
        make_storage_client(settings.gcp_project),
        settings.gcs_bucket,
        signer=signer,
        timeout=settings.gcs_timeout_s,
        # Bounded: a worker answering "retry later" beats one stuck past its ack deadline.
        retry=DEFAULT_RETRY.with_timeout(settings.gcs_retry_timeout_s),
    )
    store.ping()
    return store
