"""Cloud Storage adapters: the blob store, its URL signers and the client factory.

Needs the `cloud` extra (google-cloud-storage, google-auth, requests) and `cryptography`
for generate_local_signing_key.
"""

from dal.gcs.blob_store import MAX_SIGNED_URL_EXPIRY, GcsBlobStore
from dal.gcs.client import emulator_endpoint, make_storage_client
from dal.gcs.signing import (
    GcsUrlSigner,
    IamUrlSigner,
    KeyFileUrlSigner,
    generate_local_signing_key,
    make_url_signer,
)

__all__ = [
    "MAX_SIGNED_URL_EXPIRY",
    "GcsBlobStore",
    "GcsUrlSigner",
    "IamUrlSigner",
    "KeyFileUrlSigner",
    "emulator_endpoint",
    "generate_local_signing_key",
    "make_storage_client",
    "make_url_signer",
]
