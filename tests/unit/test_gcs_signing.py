"""URL signers for Cloud Storage, the local signing key and the client factory: no network.

The IAM signer is checked through what it hands to `Blob.generate_signed_url` (a recording
blob), with credentials that count their refreshes; the key-file signer through a real
Blob and a V4 signature rebuilt from Google's description of the scheme.
"""

from __future__ import annotations

import json
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import google.auth.transport
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.oauth2 import service_account

from dal.errors import SigningNotConfigured
from dal.gcs import (
    IamUrlSigner,
    KeyFileUrlSigner,
    emulator_endpoint,
    generate_local_signing_key,
    make_storage_client,
    make_url_signer,
)
from dal.gcs.signing import DEFAULT_LOCAL_SIGNER_EMAIL
from tests.integration.gcs_service import verify_v4_signed_url

RUNTIME_ACCOUNT = "runtime@prod-project.iam.gserviceaccount.com"


class _NoNetworkRequest(google.auth.transport.Request):
    """The transport handed to refresh(); the fake credentials never call it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no HTTP in unit tests")


class _Credentials:
    """Like Cloud Run's Compute Engine credentials: no token until refreshed, and the
    account reads "default" until the first refresh has asked the metadata server."""

    def __init__(self, *, email: str | None = RUNTIME_ACCOUNT, refresh_delay: float = 0) -> None:
        self.token: str | None = None
        self.expired = False
        self.refreshes = 0
        self.requests: list[object] = []
        self.service_account_email = "default"
        self._email = email
        self._delay = refresh_delay
        self._lock = threading.Lock()

    def refresh(self, request: google.auth.transport.Request) -> None:
        time.sleep(self._delay)
        with self._lock:
            self.refreshes += 1
            self.requests.append(request)
            self.token = f"token-{self.refreshes}"
            self.expired = False
            if self._email is not None:
                self.service_account_email = self._email


class _RecordingBlob:
    """Records the arguments of generate_signed_url instead of calling IAM signBlob."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def generate_signed_url(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return f"https://storage.googleapis.com/bkt/key?sig={len(self.calls)}"


# ---- IAM signBlob signer ---------------------------------------------------------------------


def test_iam_signer_refreshes_a_missing_token_and_signs_through_iam() -> None:
    """The first signature fetches a token and passes it, with the account, as signBlob's
    authorisation; V4, GET and the lifetime go to the library unchanged."""
    credentials = _Credentials()
    request = _NoNetworkRequest()
    signer = IamUrlSigner(credentials=credentials, request=request)
    blob = _RecordingBlob()

    url = signer.sign(blob, expires_in=timedelta(minutes=15))

    assert url == "https://storage.googleapis.com/bkt/key?sig=1"
    assert credentials.refreshes == 1
    assert credentials.requests == [request]
    assert blob.calls == [
        {
            "version": "v4",
            "method": "GET",
            "expiration": timedelta(minutes=15),
            "service_account_email": RUNTIME_ACCOUNT,
            "access_token": "token-1",
            "api_access_endpoint": None,
        }
    ]


def test_iam_signer_reuses_a_valid_token_and_refreshes_an_expired_one() -> None:
    credentials = _Credentials()
    signer = IamUrlSigner(credentials=credentials, request=_NoNetworkRequest())
    blob = _RecordingBlob()

    signer.sign(blob, expires_in=timedelta(minutes=1))
    signer.sign(blob, expires_in=timedelta(minutes=1))
    assert credentials.refreshes == 1
    assert [call["access_token"] for call in blob.calls] == ["token-1", "token-1"]

    credentials.expired = True
    signer.sign(blob, expires_in=timedelta(minutes=1))
    assert credentials.refreshes == 2
    assert blob.calls[-1]["access_token"] == "token-2"


def test_iam_signer_prefers_the_configured_account() -> None:
    """GCS_SIGNING_SERVICE_ACCOUNT names the signer even when the runtime is another one."""
    signer = IamUrlSigner(
        "signer@prod-project.iam.gserviceaccount.com",
        credentials=_Credentials(),
        request=_NoNetworkRequest(),
    )
    blob = _RecordingBlob()
    signer.sign(blob, expires_in=timedelta(minutes=1))
    assert blob.calls[0]["service_account_email"] == "signer@prod-project.iam.gserviceaccount.com"


def test_iam_signer_without_an_account_says_what_to_configure() -> None:
    """Credentials that name no service account (a user's) cannot sign: a clear error."""
    signer = IamUrlSigner(credentials=_Credentials(email=None), request=_NoNetworkRequest())
    with pytest.raises(SigningNotConfigured, match="GCS_SIGNING_SERVICE_ACCOUNT"):
        signer.sign(_RecordingBlob(), expires_in=timedelta(minutes=1))


def test_iam_signer_refreshes_once_for_concurrent_callers() -> None:
    """Threads that find the token expired at the same moment share one refresh."""
    credentials = _Credentials(refresh_delay=0.05)
    credentials.token = "stale"
    credentials.expired = True
    signer = IamUrlSigner(credentials=credentials, request=_NoNetworkRequest())
    blobs = [_RecordingBlob() for _ in range(8)]
    barrier = threading.Barrier(len(blobs))

    def sign(blob: _RecordingBlob) -> None:
        barrier.wait()
        signer.sign(blob, expires_in=timedelta(minutes=1))

    threads = [threading.Thread(target=sign, args=(blob,)) for blob in blobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert credentials.refreshes == 1
    assert [blob.calls[0]["access_token"] for blob in blobs] == ["token-1"] * len(blobs)


# ---- choosing a signer -----------------------------------------------------------------------


def test_make_url_signer_prefers_a_key_file(tmp_path: Path) -> None:
    key_file = generate_local_signing_key(tmp_path / "key.json")
    assert isinstance(make_url_signer(key_file=key_file), KeyFileUrlSigner)
    assert isinstance(
        make_url_signer(key_file=key_file, service_account_email=RUNTIME_ACCOUNT),
        KeyFileUrlSigner,
    )


def test_make_url_signer_falls_back_to_iam_without_touching_the_network() -> None:
    assert isinstance(make_url_signer(service_account_email=RUNTIME_ACCOUNT), IamUrlSigner)
    assert isinstance(make_url_signer(), IamUrlSigner)


# ---- the local signing key -------------------------------------------------------------------


def test_local_signing_key_is_a_private_service_account_key(tmp_path: Path) -> None:
    path = generate_local_signing_key(tmp_path / "keys" / "signer.json")

    assert path == tmp_path / "keys" / "signer.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = json.loads(path.read_text())
    assert info["type"] == "service_account"
    assert info["client_email"] == DEFAULT_LOCAL_SIGNER_EMAIL
    assert info["project_id"] == "local-project"
    key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    assert key.key_size == 2048  # type: ignore[union-attr]
    credentials = service_account.Credentials.from_service_account_file(str(path))
    assert credentials.signer_email == DEFAULT_LOCAL_SIGNER_EMAIL
    assert sorted(p.name for p in path.parent.iterdir()) == ["signer.json"]


def test_local_signing_key_replaces_an_existing_file_with_a_new_key(tmp_path: Path) -> None:
    path = tmp_path / "signer.json"
    path.write_text("old")
    path.chmod(0o644)
    generate_local_signing_key(path, client_email="x@other-project.iam.gserviceaccount.com")
    first = json.loads(path.read_text())
    generate_local_signing_key(path)
    second = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first["project_id"] == "other-project"
    assert first["private_key"] != second["private_key"]


# ---- the key-file signer, on a real Blob -----------------------------------------------------


def _public_key(key_file: Path) -> RSAPublicKey:
    pem = json.loads(key_file.read_text())["private_key"].encode()
    public = serialization.load_pem_private_key(pem, password=None).public_key()
    assert isinstance(public, RSAPublicKey)
    return public


def _blob(key: str = "images/a/0.png") -> Any:
    client = storage.Client(project="p", credentials=AnonymousCredentials())
    return client.bucket("bkt").blob(key)


def test_key_file_signer_points_at_the_emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With STORAGE_EMULATOR_HOST set, URLs go to the emulator, signed by the key file."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023")
    key_file = generate_local_signing_key(tmp_path / "key.json")
    signer = KeyFileUrlSigner(key_file)
    assert signer.signer_email == DEFAULT_LOCAL_SIGNER_EMAIL

    url = signer.sign(_blob(), expires_in=timedelta(minutes=5))

    assert url.startswith("http://127.0.0.1:9023/bkt/images/a/0.png?X-Goog-Algorithm=")
    assert "X-Goog-Expires=300&" in url
    verify_v4_signed_url(url, _public_key(key_file))


def test_key_file_signer_without_emulator_uses_the_client_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    key_file = generate_local_signing_key(tmp_path / "key.json")
    url = KeyFileUrlSigner(key_file).sign(_blob(), expires_in=timedelta(minutes=5))
    assert url.startswith("https://storage.googleapis.com/bkt/images/a/0.png?")
    verify_v4_signed_url(url, _public_key(key_file))


def test_key_file_signer_refuses_a_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        KeyFileUrlSigner(tmp_path / "missing.json")


# ---- client factory --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:9023", "http://127.0.0.1:9023"),
        ("127.0.0.1:9023", "http://127.0.0.1:9023"),
        ("http://localhost:9023/", "http://localhost:9023"),
        ("", None),
    ],
)
def test_emulator_endpoint(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", value)
    assert emulator_endpoint() == expected


def test_storage_client_for_the_emulator_is_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9023")
    client = make_storage_client("local-project")
    assert client.project == "local-project"
    assert client.api_endpoint == "http://127.0.0.1:9023"
    assert isinstance(client._credentials, AnonymousCredentials)
