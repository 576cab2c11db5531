"""The POST itself, behind a port so the dispatcher can be tested with a fake that records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import httpx

from dal.errors import SendFailed

USER_AGENT = "txt2img-webhooks/1"


class WebhookSender(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST `body`; returns the HTTP status. Raises SendFailed without an answer."""
        ...

    def close(self) -> None: ...


class HttpxSender:
    """Redirects are not followed: a 3xx is the receiver's answer (final), and following it
    would let a public URL bounce the request to a private one."""

    def __init__(self, *, timeout_s: float) -> None:
        self._client = httpx.Client(
            timeout=timeout_s, follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        try:
            response = self._client.post(
                url, content=body, headers={"Content-Type": "application/json", **headers}
            )
        except httpx.HTTPError as exc:
            raise SendFailed(f"{type(exc).__name__}: {exc}") from exc
        return response.status_code

    def close(self) -> None:
        self._client.close()
