"""BlobStore on Google Cloud Storage (or gcp-storage-emulator through STORAGE_EMULATOR_HOST).

Images are served by Cloud Storage itself at V4 signed URLs (see dal.gcs.signing); the API
never proxies their bytes.

Error mapping, and why:

* 404 on get → BlobNotFound. Cloud Storage answers 404 for a missing bucket too; telling the
  two apart would cost a second request on every miss, and `ping` (readiness) reports a
  missing bucket. On delete a 404 is success (the port says deleting a missing blob is not an
  error); `exists` answers False. On put and ping a 404 can only mean the bucket is missing:
  StoreUnavailable, since the store cannot work until it is created.
* 408, 429, 5xx, connection errors, timeouts, retries given up (RetryError), token refresh
  and signBlob transport failures, a download whose checksum does not match → StoreUnavailable:
  transient, the API answers 503 and the caller may retry.
* 401 / 403 → StoreUnavailable too, with a message naming IAM. They are not transient (the
  service account lacks a role, or its credentials are wrong), but they are not the caller's
  fault either: the store is unusable until someone fixes the deployment, which is what
  StoreUnavailable (and a failing readiness check) says.
* Other 4xx (400, 409, 412, ...) → ValueError: the request we built was refused as invalid,
  which retrying will not fix. validate_blob_key makes these unexpected.
* Anything else propagates unchanged.

Every call takes `timeout` (seconds per HTTP request, default 30) and `retry` (default:
google-cloud-storage's DEFAULT_RETRY: exponential backoff on 408/429/5xx and connection
errors, for up to 120 s in all). Retries are applied to every operation, uploads and deletes
included: re-putting the same bytes under the same key, or deleting twice, ends in the same
state, so no generation precondition is needed. Pass `retry=None` to fail fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exc
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY

from dal.errors import BlobNotFound, StoreUnavailable
from dal.gcs.signing import GcsUrlSigner
from dal.ports import SignedUrl
from dal.records import utcnow
from dal.url_signing import validate_blob_key

# The V4 maximum: Cloud Storage refuses X-Goog-Expires above 604800.
MAX_SIGNED_URL_EXPIRY = timedelta(days=7)
DEFAULT_TIMEOUT_S = 30.0
# Images are per user: browsers may cache them, shared caches (CDNs, proxies) must not.
DEFAULT_CACHE_CONTROL = "private"

_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    gexc.RetryError,
    requests.exceptions.RequestException,  # ConnectionError, Timeout, ChunkedEncodingError, ...
    auth_exc.TransportError,
    auth_exc.RefreshError,
    DataCorruption,
    ConnectionError,
    TimeoutError,
)


class GcsBlobStore:
    def __init__(
        self,
        client: storage.Client,
        bucket: str,
        *,
        signer: GcsUrlSigner,
        clock: Callable[[], datetime] = utcnow,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: Retry | None = DEFAULT_RETRY,
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._client = client
        self._bucket_name = bucket
        self._bucket = client.bucket(bucket)
        self._signer = signer
        self._clock = clock
        self._timeout = timeout
        self._retry = retry
        self._cache_control = cache_control

    @property
    def bucket_name(self) -> str:
        return self._bucket_name

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        blob = self._blob(key)
        blob.cache_control = self._cache_control
        try:
            blob.upload_from_string(
                data, content_type=content_type, timeout=self._timeout, retry=self._retry
            )
        except gexc.NotFound as exc:
            raise self._bucket_missing() from exc
        except Exception as exc:
            _reraise(exc, f"cannot write blob {key!r} to bucket {self._bucket_name!r}")

    def get(self, key: str) -> bytes:
        blob = self._blob(key)
        try:
            data = blob.download_as_bytes(timeout=self._timeout, retry=self._retry)
        except gexc.NotFound:
            raise BlobNotFound(key) from None
        except Exception as exc:
            _reraise(exc, f"cannot read blob {key!r} from bucket {self._bucket_name!r}")
        return bytes(data)

    def delete(self, key: str) -> None:
        blob = self._blob(key)
        try:
            blob.delete(timeout=self._timeout, retry=self._retry)
        except gexc.NotFound:
            return
        except Exception as exc:
            _reraise(exc, f"cannot delete blob {key!r} from bucket {self._bucket_name!r}")

    def exists(self, key: str) -> bool:
        blob = self._blob(key)
        try:
            return bool(blob.exists(timeout=self._timeout, retry=self._retry))
        except Exception as exc:
            _reraise(exc, f"cannot look up blob {key!r} in bucket {self._bucket_name!r}")

    def signed_url(self, key: str, *, expires_in: timedelta) -> SignedUrl:
        blob = self._blob(key)
        # Whole seconds, as X-Goog-Expires carries them; rounded up so the URL lasts at least
        # as long as asked.
        seconds = math.ceil(expires_in.total_seconds())
        if seconds < 1:
            raise ValueError(f"signed URL expiry must be at least 1 s, got {expires_in}")
        if seconds > MAX_SIGNED_URL_EXPIRY.total_seconds():
            raise ValueError(
                f"signed URL expiry {expires_in} exceeds Cloud Storage's maximum of 7 days"
            )
        lifetime = timedelta(seconds=seconds)
        now = self._clock()
        try:
            url = self._signer.sign(blob, expires_in=lifetime)
        except Exception as exc:
            _reraise(exc, f"cannot sign a URL for blob {key!r}")
        return SignedUrl(url=url, expires_at=(now + lifetime).astimezone(UTC))

    def ping(self) -> None:
        """Lists at most one object: proves the bucket exists and that we may read it, with
        only the object permissions the service needs anyway (getting the bucket itself
        would need storage.buckets.get, which roles/storage.objectAdmin lacks)."""
        try:
            for _ in self._client.list_blobs(
                self._bucket_name, max_results=1, timeout=self._timeout, retry=self._retry
            ):
                break
        except gexc.NotFound as exc:
            raise self._bucket_missing() from exc
        except Exception as exc:
            _reraise(exc, f"bucket {self._bucket_name!r} is not reachable")

    def _blob(self, key: str) -> Any:
        return self._bucket.blob(validate_blob_key(key))

    def _bucket_missing(self) -> StoreUnavailable:
        return StoreUnavailable(f"bucket {self._bucket_name!r} does not exist")


def _reraise(exc: Exception, what: str) -> NoReturn:
    """Raise the DAL's (or a ValueError's) version of a vendor error, or `exc` itself."""
    if isinstance(exc, gexc.GoogleAPICallError) and not isinstance(exc, gexc.RetryError):
        code = exc.code
        if code in (401, 403):
            raise StoreUnavailable(
                f"{what}: permission denied ({code}); check the service account's IAM "
                f"roles on the bucket: {exc.message}"
            ) from exc
        if code is not None and 400 <= code < 500 and code not in (408, 429):
            raise ValueError(f"{what}: Cloud Storage refused the request ({code}): {exc.message}")
        raise StoreUnavailable(f"{what}: {code or 'error'} {exc.message}") from exc
    if isinstance(exc, _TRANSIENT_EXCEPTIONS):
        raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
    raise exc
