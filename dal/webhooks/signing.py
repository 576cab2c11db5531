"""Signing and verifying webhook deliveries: Standard Webhooks (https://www.standardwebhooks.com).

    webhook-id:         `<job id>.<event>`, stable per job and event; receivers dedupe on it
    webhook-timestamp:  Unix seconds when this attempt was signed
    webhook-signature:  v1,<base64 HMAC-SHA256(key, f"{webhook-id}.{webhook-timestamp}.{body}")>

An owner's secret is `whsec_` + base64 of its 32-byte key, so any Standard Webhooks library
(the `standardwebhooks` package for Python and JavaScript, Svix's) verifies our deliveries with
it as given. Each owner's key is derived from WEBHOOK_SIGNING_SECRET, so one user's secret
cannot forge or verify deliveries to another. Signing and verifying go through the
`standardwebhooks` package rather than our own HMAC code, so what we send is what those
libraries check.

The spec asks that a webhook-id not be user controlled (or hold no `.`, which would blur where
the id ends in the signed content). Ours holds dots but is never user controlled: the job id is
the service's own uuid4 hex and the event one of job.succeeded, job.failed, job.canceled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook, WebhookVerificationError
from standardwebhooks.webhooks import EmptyWebhookSecretError

from dal.errors import WebhookSignatureInvalid

SECRET_PREFIX = "whsec_"  # noqa: S105  # nosec B105 # a marker, not a secret

# The spec's names. HTTP header names are case-insensitive; the libraries look them up in
# lowercase, and HTTP/2 sends them so anyway.
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def owner_secret(master_secret: str, owner: str) -> str:
    """The owner's Standard Webhooks secret: `whsec_` + base64 of HMAC-SHA256(master, owner),
    a 32-byte key (the spec asks for 24 to 64). Derived, so nothing is stored, and rotating
    the master rotates them all."""
    if not master_secret:
        raise ValueError("the webhook signing secret must not be empty")
    key = hmac.new(master_secret.encode(), owner.encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def _webhook(secret: str) -> Webhook:
    try:
        return Webhook(secret)
    except (binascii.Error, EmptyWebhookSecretError):
        # binascii.Error names the base64 problem, never the secret's text.
        raise ValueError("not a Standard Webhooks secret (whsec_ + base64)") from None


def signed_headers(secret: str, *, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for sending exactly `body` at `timestamp`."""
    signed_at = datetime.fromtimestamp(timestamp, tz=UTC)
    # bytes, not text: the library signs them byte for byte, so the body that goes out is the
    # body that was signed.
    signature = _webhook(secret).sign(message_id, signed_at, body)
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature,
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Raises WebhookSignatureInvalid unless `body`, with these headers, was signed with
    `secret` within the library's tolerance (5 minutes either way of this machine's clock).
    This is the check every Standard Webhooks receiver makes; header names may be in any case.
    Several space-separated signatures are fine (one must match), as during a rotation."""
    webhook = _webhook(secret)
    try:
        webhook.verify(body, dict(headers.items()), json_parse=False)
    except WebhookVerificationError as exc:
        raise WebhookSignatureInvalid(str(exc)) from None
