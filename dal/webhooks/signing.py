"""Signing and verifying webhook deliveries (Standard Webhooks style headers).

    Webhook-Id:         stable per job and event; receivers dedupe on it
    Webhook-Timestamp:  Unix seconds when this attempt was signed
    Webhook-Signature:  v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

Each owner has their own secret, derived from WEBHOOK_SIGNING_SECRET, so that one user's secret
cannot forge deliveries to another. docs/api.md shows the same verification in plain Python.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from dal.errors import WebhookSignatureInvalid

SECRET_PREFIX = "whsec_"  # noqa: S105  # nosec B105 # a marker, not a secret
SIGNATURE_VERSION = "v1"
DEFAULT_MAX_AGE_S = 300

ID_HEADER = "Webhook-Id"
TIMESTAMP_HEADER = "Webhook-Timestamp"
SIGNATURE_HEADER = "Webhook-Signature"


def owner_secret(master_secret: str, owner: str) -> str:
    """The owner's signing secret: HMAC(master, owner). Rotating the master rotates them all."""
    if not master_secret:
        raise ValueError("the webhook signing secret must not be empty")
    digest = hmac.new(master_secret.encode(), owner.encode(), hashlib.sha256).hexdigest()
    return SECRET_PREFIX + digest


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Webhook-Signature header value for `body` signed at `timestamp`."""
    message = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(secret: str, *, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    now: float | None = None,
) -> None:
    """Raises WebhookSignatureInvalid unless one of the signatures in the header is ours for this
    body and timestamp, and the timestamp is within `max_age_s` of `now` (either way: a clock
    ahead of ours is as suspicious as a replay). `headers` lookups are case-insensitive when
    the mapping is (e.g. httpx or Starlette headers); plain dicts need the exact names."""
    raw_timestamp = headers.get(TIMESTAMP_HEADER)
    raw_signature = headers.get(SIGNATURE_HEADER)
    if not raw_timestamp or not raw_signature:
        raise WebhookSignatureInvalid("missing Webhook-Timestamp or Webhook-Signature")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookSignatureInvalid("Webhook-Timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > max_age_s:
        raise WebhookSignatureInvalid("Webhook-Timestamp is outside the allowed age")
    expected = sign(secret, timestamp, body)
    # Several space-separated signatures may be sent while a secret rotates.
    # Bytes, not str: compare_digest raises TypeError on non-ASCII text, and a forged header
    # must fail as WebhookSignatureInvalid like any other mismatch.
    wanted = expected.encode()
    if not any(
        hmac.compare_digest(wanted, candidate.encode()) for candidate in raw_signature.split()
    ):
        raise WebhookSignatureInvalid("no signature matches")
