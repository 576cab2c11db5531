"""GcsBlobStore on gcp-storage-emulator against the BlobStore contract, plus what only Cloud
Storage has: V4 signed URLs, the 7-day cap, metadata, and the mapping of its errors."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from google.api_core import exceptions as gexc
from google.cloud.storage.retry import DEFAULT_RETRY

from dal.errors import BlobNotFound, StoreUnavailable
from dal.gcs import GcsBlobStore, KeyFileUrlSigner, generate_local_signing_key, make_storage_client
from emulators import gcs
from emulators.process import Service, ServiceUnavailable, free_port
from tests.contracts.blob_store_contract import KEY, BlobStoreContract
from tests.contracts.job_store_contract import ManualClock
from tests.integration.gcs_service import (
    PROJECT,
    gcs_emulator_fixture,  # noqa: F401 - registers the gcs_emulator fixture
    verify_v4_signed_url,
)

SIGNER_EMAIL = "contract-signer@local-project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One key for the module: generating a 2048-bit RSA key takes ~0.1 s.
    path = tmp_path_factory.mktemp("gcs-signing") / "signing-key.json"
    return generate_local_signing_key(path, client_email=SIGNER_EMAIL)


@pytest.fixture(scope="module")
def public_key(key_file: Path) -> RSAPublicKey:
    pem = json.loads(key_file.read_text())["private_key"].encode()
    private = serialization.load_pem_private_key(pem, password=None)
    public = private.public_key()
    assert isinstance(public, RSAPublicKey)
    return public


@pytest.fixture
def url_signer(gcs_emulator: Service, key_file: Path) -> KeyFileUrlSigner:
    return KeyFileUrlSigner(key_file)


@pytest.fixture
def bucket(gcs_emulator: Service) -> str:
    name = f"test-{uuid.uuid4().hex[:24]}"
    gcs.create_bucket(gcs_emulator.address, name, PROJECT)
    return name


class TestGcsBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, bucket: str, url_signer: KeyFileUrlSigner, clock: ManualClock) -> GcsBlobStore:
        return GcsBlobStore(
            make_storage_client(PROJECT), bucket, signer=url_signer, clock=clock, timeout=10
        )

    # ---- metadata ----------------------------------------------------------------------------

    def test_put_records_content_type_and_private_cache_control(
        self, store: GcsBlobStore, bucket: str
    ) -> None:
        """Cloud Storage serves the blob with its content type; shared caches must not keep it."""
        store.put(KEY, b"pixels", content_type="image/png")
        blob = make_storage_client(PROJECT).bucket(bucket).get_blob(KEY)
        assert blob.content_type == "image/png"
        assert blob.cache_control == "private"

    # ---- signed URLs -------------------------------------------------------------------------

    def test_signed_url_is_v4_for_the_emulator_and_downloads_the_bytes(
        self, store: GcsBlobStore, bucket: str, gcs_emulator: Service
    ) -> None:
        """The URL is a V4 URL on the emulator's host for bucket/key, with the asked expiry,
        and a plain GET on it returns the blob (the emulator does not check signatures)."""
        data = b"\x89PNG" + bytes(range(256))
        store.put(KEY, data, content_type="image/png")
        signed = store.signed_url(KEY, expires_in=timedelta(minutes=15))
        parts = urlsplit(signed.url)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        assert f"{parts.scheme}://{parts.netloc}" == gcs.endpoint(gcs_emulator)
        assert parts.path == f"/{bucket}/{KEY}"
        assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
        assert query["X-Goog-Expires"] == "900"
        assert query["X-Goog-Credential"].startswith(f"{SIGNER_EMAIL}/")
        assert query["X-Goog-Credential"].endswith("/auto/storage/goog4_request")
        assert query["X-Goog-SignedHeaders"] == "host"
        signed_at = datetime.strptime(query["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert abs(signed_at - datetime.now(UTC)) < timedelta(minutes=1)
        response = requests.get(signed.url, timeout=10)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["Content-Type"] == "image/png"

    @pytest.mark.parametrize("expires_in", [timedelta(seconds=1), timedelta(days=7)])
    def test_signed_url_expiry_is_the_one_asked_for(
        self, store: GcsBlobStore, expires_in: timedelta
    ) -> None:
        """X-Goog-Expires carries the lifetime in whole seconds, up to the 7-day maximum."""
        signed = store.signed_url(KEY, expires_in=expires_in)
        expires = parse_qs(urlsplit(signed.url).query)["X-Goog-Expires"]
        assert expires == [str(int(expires_in.total_seconds()))]

    def test_signed_url_rounds_a_fractional_expiry_up(
        self, store: GcsBlobStore, clock: ManualClock
    ) -> None:
        """A lifetime of 1.2 s becomes 2 s: the URL lasts at least as long as asked."""
        signed = store.signed_url(KEY, expires_in=timedelta(seconds=1.2))
        assert parse_qs(urlsplit(signed.url).query)["X-Goog-Expires"] == ["2"]
        assert signed.expires_at == clock() + timedelta(seconds=2)

    @pytest.mark.parametrize(
        "expires_in",
        [
            timedelta(days=7, seconds=1),
            timedelta(days=7, microseconds=1),
            timedelta(days=30),
            timedelta(0),
            timedelta(seconds=-5),
        ],
    )
    def test_expiry_beyond_seven_days_or_not_positive_is_refused(
        self, store: GcsBlobStore, expires_in: timedelta
    ) -> None:
        """Cloud Storage refuses V4 URLs valid for more than 7 days; none is signed."""
        with pytest.raises(ValueError):
            store.signed_url(KEY, expires_in=expires_in)

    def test_signature_verifies_with_the_key_files_public_key(
        self, store: GcsBlobStore, public_key: RSAPublicKey
    ) -> None:
        """The V4 signature, rebuilt from Google's description, verifies with the signing
        key, and stops verifying when the path, expiry, date or signature is altered."""
        url = store.signed_url(KEY, expires_in=timedelta(minutes=15)).url
        verify_v4_signed_url(url, public_key)
        tampered = [
            url.replace("job-0001", "job-0002"),
            url.replace("0.png", "1.png"),
            url.replace("X-Goog-Expires=900", "X-Goog-Expires=901"),
            url.replace("X-Goog-Date=2", "X-Goog-Date=1"),
            url[:-1] + ("0" if url[-1] != "0" else "1"),
        ]
        for bad in tampered:
            assert bad != url
            with pytest.raises(InvalidSignature):
                verify_v4_signed_url(bad, public_key)

    def test_a_foreign_key_does_not_verify(
        self, store: GcsBlobStore, tmp_path: Path, public_key: RSAPublicKey
    ) -> None:
        """A URL signed with another key (same account name) fails against ours."""
        other = GcsBlobStore(
            make_storage_client(PROJECT),
            store.bucket_name,
            signer=KeyFileUrlSigner(
                generate_local_signing_key(tmp_path / "other.json", client_email=SIGNER_EMAIL)
            ),
        )
        with pytest.raises(InvalidSignature):
            verify_v4_signed_url(
                other.signed_url(KEY, expires_in=timedelta(minutes=15)).url, public_key
            )

    # ---- a missing bucket --------------------------------------------------------------------

    def test_missing_bucket(self, url_signer: KeyFileUrlSigner) -> None:
        """ping and put report the missing bucket as StoreUnavailable; reads see no blob."""
        store = GcsBlobStore(make_storage_client(PROJECT), "no-such-bucket", signer=url_signer)
        with pytest.raises(StoreUnavailable, match="does not exist"):
            store.ping()
        with pytest.raises(StoreUnavailable, match="does not exist"):
            store.put(KEY, b"data", content_type="image/png")
        with pytest.raises(BlobNotFound):
            store.get(KEY)
        assert not store.exists(KEY)
        store.delete(KEY)


# ---- an emulator that is not there -------------------------------------------------------------


@pytest.fixture
def closed_port_client(gcs_emulator: Service, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # A port that nothing listens on (bound then released by free_port).
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    yield make_storage_client(PROJECT)


@pytest.mark.parametrize(
    "retry", [None, DEFAULT_RETRY.with_timeout(0.5)], ids=["no-retry", "retry-gives-up"]
)
def test_unreachable_store_raises_store_unavailable_quickly(
    closed_port_client: Any, url_signer: KeyFileUrlSigner, retry: Any
) -> None:
    """Connection refused, directly or after the retry deadline, is StoreUnavailable for
    every operation that talks to Cloud Storage, and it comes within the deadline."""
    store = GcsBlobStore(closed_port_client, "bkt", signer=url_signer, timeout=2, retry=retry)
    operations: list[Callable[[], object]] = [
        lambda: store.put(KEY, b"data", content_type="image/png"),
        lambda: store.get(KEY),
        lambda: store.exists(KEY),
        lambda: store.delete(KEY),
        store.ping,
    ]
    for operation in operations:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            operation()
        assert time.monotonic() - started < 3
    # Signing needs no network: it still works.
    assert store.signed_url(KEY, expires_in=timedelta(minutes=1)).url


# ---- error mapping, with a bucket that fails on demand (no emulator) ---------------------------


class _FailingBlob:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.cache_control: str | None = None

    def upload_from_string(self, *args: object, **kwargs: object) -> None:
        raise self.error

    def download_as_bytes(self, **kwargs: object) -> bytes:
        raise self.error

    def delete(self, **kwargs: object) -> None:
        raise self.error

    def exists(self, **kwargs: object) -> bool:
        raise self.error


class _FailingClient:
    """Stands in for storage.Client: every blob operation and listing raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def bucket(self, name: str) -> _FailingClient:
        return self

    def blob(self, name: str) -> _FailingBlob:
        return _FailingBlob(self.error)

    def list_blobs(self, *args: object, **kwargs: object) -> list[object]:
        raise self.error


class _NoSigner:
    def sign(self, blob: Any, *, expires_in: timedelta) -> str:
        raise AssertionError("not used")


def _failing_store(error: Exception) -> GcsBlobStore:
    return GcsBlobStore(_FailingClient(error), "bkt", signer=_NoSigner())


def _all_operations(store: GcsBlobStore) -> list[Callable[[], object]]:
    return [
        lambda: store.put(KEY, b"x", content_type="image/png"),
        lambda: store.get(KEY),
        lambda: store.exists(KEY),
        lambda: store.delete(KEY),
        store.ping,
    ]


@pytest.mark.parametrize(
    "error",
    [
        gexc.TooManyRequests("slow down"),
        gexc.InternalServerError("boom"),
        gexc.BadGateway("bad gateway"),
        gexc.ServiceUnavailable("unavailable"),
        gexc.GatewayTimeout("gateway timeout"),
        gexc.from_http_status(408, "request timeout"),
        gexc.Unauthorized("who are you"),
        gexc.Forbidden("no role"),
        gexc.RetryError("gave up", cause=ConnectionError("refused")),
        requests.exceptions.ConnectionError("refused"),
        requests.exceptions.ReadTimeout("read timed out"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_and_permission_errors_become_store_unavailable(error: Exception) -> None:
    """429, 5xx, 408, 401/403, retries given up and connection failures: StoreUnavailable,
    with the vendor error kept as the cause."""
    for operation in _all_operations(_failing_store(error)):
        with pytest.raises(StoreUnavailable) as info:
            operation()
        assert info.value.__cause__ is error


def test_permission_errors_name_iam() -> None:
    with pytest.raises(StoreUnavailable, match="IAM"):
        _failing_store(gexc.Forbidden("no storage.objects.get")).get(KEY)


@pytest.mark.parametrize(
    "error",
    [gexc.BadRequest("bad"), gexc.Conflict("conflict"), gexc.PreconditionFailed("nope")],
    ids=lambda e: type(e).__name__,
)
def test_other_client_errors_become_value_error(error: gexc.GoogleAPICallError) -> None:
    """A request Cloud Storage refuses as invalid is not retryable: ValueError."""
    for operation in _all_operations(_failing_store(error)):
        with pytest.raises(ValueError, match=str(error.code)):
            operation()


def test_not_found_per_operation() -> None:
    """404: get → BlobNotFound, delete → fine, put and ping → the bucket is missing."""
    store = _failing_store(gexc.NotFound("no such object"))
    with pytest.raises(BlobNotFound):
        store.get(KEY)
    store.delete(KEY)
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.put(KEY, b"x", content_type="image/png")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.ping()


def test_unrelated_errors_propagate_unchanged() -> None:
    error = KeyError("a bug")
    with pytest.raises(KeyError) as info:
        _failing_store(error).get(KEY)
    assert info.value is error


# ---- the emulator helpers ----------------------------------------------------------------------


def test_emulator_start_reuses_the_one_serving(gcs_emulator: Service, tmp_path: Path) -> None:
    """start on a port where an emulator serves returns it without starting another."""
    again = gcs.start(gcs_emulator.port, host=gcs_emulator.host, state_dir=tmp_path)
    assert again.port == gcs_emulator.port
    assert not again.started_here
    assert list(tmp_path.iterdir()) == []
    gcs.stop(again)  # a reused emulator is left running
    assert gcs.serving(gcs_emulator.host, gcs_emulator.port)


def test_emulator_refuses_a_port_taken_by_something_else(tmp_path: Path) -> None:
    """The emulator would linger without serving on a taken port: start refuses it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServiceUnavailable, match="taken"):
            gcs.start(port, state_dir=tmp_path)


def test_create_bucket_twice_is_fine(gcs_emulator: Service) -> None:
    name = f"test-{uuid.uuid4().hex[:24]}"
    gcs.create_bucket(gcs_emulator.address, name, PROJECT)
    gcs.create_bucket(gcs.endpoint(gcs_emulator), name, PROJECT)
    assert make_storage_client(PROJECT).bucket(name).exists()


def test_emulator_that_cannot_bind_fails_fast(gcs_emulator: Service, tmp_path: Path) -> None:
    """A port bound (not listening) by another socket looks free, but the emulator cannot
    bind it: start notices from its log, stops it and says so, instead of waiting."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="could not bind"):
            gcs.start(port, state_dir=tmp_path, timeout=20)
        assert time.monotonic() - started < 10
    pid = int((tmp_path / f"gcs-{port}.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
