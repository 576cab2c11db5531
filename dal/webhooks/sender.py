"""The POST itself, behind a port so the dispatcher can be tested with a fake that records."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

USER_AGENT = "txt2img-webhooks/1"


class SendFailed(Exception):
    """No HTTP answer: refused, reset, timed out, TLS failure."""


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


@dataclass
class SentRequest:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class RecordingSender:
    """An in-memory sender: records every request and answers from `answers` in order (an int
    is a status, an exception is raised); after the list runs out it answers `default`."""

    answers: list[int | Exception] = field(default_factory=list)
    default: int = 200
    sent: list[SentRequest] = field(default_factory=list)
    on_post: Callable[[SentRequest], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        request = SentRequest(url=url, body=body, headers=dict(headers))
        with self._lock:
            self.sent.append(request)
            answer = self.answers.pop(0) if self.answers else self.default
        if self.on_post is not None:
            self.on_post(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        return None
