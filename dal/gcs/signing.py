"""V4 signed URLs (GET) for Cloud Storage objects, and the two ways of signing them.

`GcsUrlSigner` is the one thing the blob store needs: `sign(blob, expires_in=...) -> url`.

* `KeyFileUrlSigner` signs locally with the RSA key of a service-account JSON key file. It is
  what the emulator setup uses, with a key made by `generate_local_signing_key` (the emulator
  does not check signatures, but the URLs are real V4 URLs that Google would accept from the
  same key). When STORAGE_EMULATOR_HOST is set the URLs point at the emulator, so they
  download from it.
* `IamUrlSigner` is for Cloud Run, where there is no key file: it has Google sign through the
  IAM Credentials signBlob API as a service account, authorised by an OAuth access token
  from the runtime's own credentials (the metadata server). The runtime account needs
  roles/iam.serviceAccountTokenCreator on the signing account (on itself when they are the
  same). Tokens are refreshed when missing or expired, under a lock, so concurrent requests
  share one refresh. Google guarantees URLs made this way for about 12 h only, however far
  the expiry is set (up to the V4 maximum of 7 days).

`make_url_signer` picks between them from the two settings (GCS_SIGNING_KEY_FILE,
GCS_SIGNING_SERVICE_ACCOUNT).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import google.auth
import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account

from dal.errors import SigningNotConfigured
from dal.gcs.client import emulator_endpoint

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_LOCAL_SIGNER_EMAIL = "local-signer@local-project.iam.gserviceaccount.com"
# Named here: in the key-file dict literal, bandit (B105) reads a string under a "token" key
# as a hard-coded password.
GOOGLE_OAUTH2_URL = "https://oauth2.googleapis.com/token"


class GcsUrlSigner(Protocol):
    def sign(self, blob: Any, *, expires_in: timedelta) -> str:
        """A V4 URL granting GET on `blob` (a google.cloud.storage.Blob) for `expires_in`,
        which the caller has already checked (whole seconds, 1 s to 7 days)."""
        ...


class KeyFileUrlSigner:
    """Signs with the private key of a service-account JSON key file, with no network call."""

    def __init__(self, key_file: Path, *, api_access_endpoint: str | None = None) -> None:
        # Raises at start (missing file, not a service-account key) rather than per request.
        self._credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]  # untyped in google-auth
            os.fspath(key_file)
        )
        # None: the client's endpoint (storage.googleapis.com, or the emulator's).
        self._endpoint = api_access_endpoint or emulator_endpoint()

    @property
    def signer_email(self) -> str:
        return str(self._credentials.signer_email)

    def sign(self, blob: Any, *, expires_in: timedelta) -> str:
        url = blob.generate_signed_url(
            version="v4",
            method="GET",
            expiration=expires_in,
            credentials=self._credentials,
            api_access_endpoint=self._endpoint,
        )
        return str(url)


class TokenCredentials(Protocol):
    """What IamUrlSigner uses of google.auth credentials (Compute Engine / Cloud Run ones
    also have `service_account_email`, which is "default" until the first refresh)."""

    @property
    def token(self) -> str | None: ...

    @property
    def expired(self) -> bool: ...

    def refresh(self, request: google.auth.transport.Request) -> None: ...


class IamUrlSigner:
    """Signs through IAM signBlob as `service_account_email` (default: the account of the
    ambient credentials), with an access token from those credentials."""

    def __init__(
        self,
        service_account_email: str | None = None,
        *,
        credentials: TokenCredentials | None = None,
        request: google.auth.transport.Request | None = None,
        api_access_endpoint: str | None = None,
    ) -> None:
        self._email = service_account_email or None
        # Both are made on first use, so building the signer never touches the network.
        self._credentials = credentials
        self._request = request
        self._endpoint = api_access_endpoint
        self._lock = threading.Lock()

    def sign(self, blob: Any, *, expires_in: timedelta) -> str:
        token, email = self._token_and_email()
        url = blob.generate_signed_url(
            version="v4",
            method="GET",
            expiration=expires_in,
            service_account_email=email,
            access_token=token,
            api_access_endpoint=self._endpoint,
        )
        return str(url)

    def _token_and_email(self) -> tuple[str, str]:
        with self._lock:
            if self._credentials is None:
                try:
                    self._credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
                except google.auth.exceptions.DefaultCredentialsError as exc:
                    raise SigningNotConfigured(
                        f"no credentials to sign URLs through IAM with ({exc}); set "
                        "GCS_SIGNING_KEY_FILE, or run where Application Default Credentials exist"
                    ) from exc
            credentials: TokenCredentials = self._credentials
            if credentials.token is None or credentials.expired:
                if self._request is None:
                    self._request = google.auth.transport.requests.Request()
                credentials.refresh(self._request)
            token = credentials.token
            email = self._email or getattr(credentials, "service_account_email", None)
        if not token:
            raise SigningNotConfigured("the credentials gave no access token after a refresh")
        if not isinstance(email, str) or not email or email == "default":
            raise SigningNotConfigured(
                "cannot tell which service account signs URLs: these credentials name none; "
                "set GCS_SIGNING_SERVICE_ACCOUNT (or GCS_SIGNING_KEY_FILE)"
            )
        return token, email


def make_url_signer(
    *, key_file: Path | None = None, service_account_email: str | None = None
) -> GcsUrlSigner:
    """A key file wins (emulator, or a deployment that has one); otherwise IAM signBlob as
    `service_account_email`, or as the runtime's own account when that is None."""
    if key_file is not None:
        return KeyFileUrlSigner(key_file)
    return IamUrlSigner(service_account_email)


def generate_local_signing_key(
    path: Path, *, client_email: str = DEFAULT_LOCAL_SIGNER_EMAIL
) -> Path:
    """Write a service-account-style JSON key with a fresh 2048-bit RSA key to `path` (mode
    0600, replacing any file there) and return `path`. For emulator setups and tests: Google
    knows nothing of this key, so real Cloud Storage refuses URLs signed with it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    match = re.fullmatch(r"[^@]+@([^.]+)\.iam\.gserviceaccount\.com", client_email)
    info = {
        "type": "service_account",
        "project_id": match.group(1) if match else "local-project",
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": client_email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": GOOGLE_OAUTH2_URL,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600, so the key is never readable by others, not even
    # briefly; the rename makes the replacement atomic.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(info, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
