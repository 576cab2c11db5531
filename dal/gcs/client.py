"""Building the Cloud Storage client, for Google or for the local emulator.

google-cloud-storage finds the emulator itself through `STORAGE_EMULATOR_HOST` (a URL such as
"http://127.0.0.1:9023"); the emulator checks no credentials, so the client gets anonymous
ones there instead of looking for Application Default Credentials that a laptop or CI runner
does not have.
"""

from __future__ import annotations

import os

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def emulator_endpoint() -> str | None:
    """The emulator's base URL from STORAGE_EMULATOR_HOST ("http://" added when the variable
    names only host:port), or None when the variable is unset or empty."""
    raw = os.environ.get(EMULATOR_ENV, "").strip()
    if not raw:
        return None
    if "://" not in raw:
        raw = f"http://{raw}"
    return raw.rstrip("/")


def make_storage_client(project: str) -> storage.Client:
    """A client for `project`: anonymous against the emulator when STORAGE_EMULATOR_HOST is
    set, Application Default Credentials (Cloud Run's service account) otherwise."""
    endpoint = emulator_endpoint()
    if endpoint is not None:
        # Passed explicitly too, so a host:port without a scheme works as well.
        return storage.Client(
            project=project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]  # untyped __init__
            client_options={"api_endpoint": endpoint},
        )
    return storage.Client(project=project)
