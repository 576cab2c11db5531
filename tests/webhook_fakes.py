"""A webhook sender that records instead of posting, for tests of the dispatcher."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from dal.webhooks.urls import WebhookTarget


@dataclass
class SentRequest:
    url: str
    body: bytes
    headers: dict[str, str]
    addresses: tuple[str, ...] = ()  # what the policy checked: all the sender may connect to


@dataclass
class RecordingSender:
    """An in-memory `dal.webhooks.sender.WebhookSender`: records every request and answers
    from `answers` in order (an int is a status, an exception is raised); after the list runs
    out it answers `default`."""

    answers: list[int | Exception] = field(default_factory=list)
    default: int = 200
    sent: list[SentRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, target: WebhookTarget, body: bytes, headers: Mapping[str, str]) -> int:
        with self._lock:
            self.sent.append(
                SentRequest(target.url, body, dict(headers), addresses=target.addresses)
            )
            answer = self.answers.pop(0) if self.answers else self.default
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        return None
