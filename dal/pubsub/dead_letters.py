"""The dead-letter subscription, seen as a box of messages an operator can list, replay and purge.

Pub/Sub moves a message to the dead-letter topic after `max_delivery_attempts` failed pushes and
adds attributes saying where it came from and how often it was tried. A pull subscription on
that topic keeps those messages until someone acknowledges them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc

from dal.errors import StoreUnavailable
from dal.pubsub.message import (
    DEAD_LETTER_ATTRIBUTE_PREFIX,
    SOURCE_SUBSCRIPTION_ATTRIBUTE,
    dead_letter_delivery_count,
    decode_job_id,
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    ack_id: str
    message_id: str
    job_id: str | None
    data: bytes
    attributes: dict[str, str]
    published_at: datetime | None

    @property
    def delivery_count(self) -> int | None:
        return dead_letter_delivery_count(self.attributes)

    @property
    def source_subscription(self) -> str | None:
        return self.attributes.get(SOURCE_SUBSCRIPTION_ATTRIBUTE)

    def attributes_for_replay(self) -> dict[str, str]:
        """The original attributes without the ones Pub/Sub added when dead-lettering."""
        return {
            k: v
            for k, v in self.attributes.items()
            if not k.startswith(DEAD_LETTER_ATTRIBUTE_PREFIX)
        }

    def age_s(self, now: datetime) -> float | None:
        return None if self.published_at is None else (now - self.published_at).total_seconds()


class DeadLetterBox:
    def __init__(self, subscriber: Any, subscription_path: str, *, timeout_s: float = 10.0):
        self._subscriber = subscriber
        self._subscription = subscription_path
        self._timeout_s = timeout_s

    def take_all(self, *, limit: int = 10_000) -> list[DeadLetter]:
        """Pull every waiting message (up to `limit`). They stay leased to the caller, who
        must `acknowledge` (done with them) or `release` (leave them in the box) each one."""
        letters: list[DeadLetter] = []
        seen: set[str] = set()
        while len(letters) < limit:
            try:
                with warnings.catch_warnings():
                    # Deprecated for consumers that wait for work; an operator listing a
                    # backlog wants exactly "what is there now".
                    warnings.simplefilter("ignore", DeprecationWarning)
                    response = self._subscriber.pull(
                        subscription=self._subscription,
                        max_messages=min(100, limit - len(letters)),
                        return_immediately=True,
                        timeout=self._timeout_s,
                    )
            except gexc.DeadlineExceeded:
                break
            except (gexc.GoogleAPICallError, gexc.RetryError, OSError) as exc:
                raise StoreUnavailable(f"cannot pull {self._subscription}: {exc}") from exc
            fresh = [r for r in response.received_messages if r.message.message_id not in seen]
            if not fresh:
                break
            for received in fresh:
                message = received.message
                seen.add(message.message_id)
                data = bytes(message.data)
                attributes = dict(message.attributes)
                published = message.publish_time
                letters.append(
                    DeadLetter(
                        ack_id=received.ack_id,
                        message_id=message.message_id,
                        job_id=decode_job_id(data, attributes),
                        data=data,
                        attributes=attributes,
                        published_at=published.astimezone(UTC) if published else None,
                    )
                )
        return letters

    def acknowledge(self, letters: Iterable[DeadLetter]) -> None:
        ack_ids = [letter.ack_id for letter in letters]
        for start in range(0, len(ack_ids), 500):
            self._call(
                self._subscriber.acknowledge,
                subscription=self._subscription,
                ack_ids=ack_ids[start : start + 500],
            )

    def release(self, letters: Iterable[DeadLetter]) -> None:
        ack_ids = [letter.ack_id for letter in letters]
        for start in range(0, len(ack_ids), 500):
            self._call(
                self._subscriber.modify_ack_deadline,
                subscription=self._subscription,
                ack_ids=ack_ids[start : start + 500],
                ack_deadline_seconds=0,
            )

    def _call(self, method: Any, **kwargs: Any) -> None:
        try:
            method(**kwargs, timeout=self._timeout_s)
        except (gexc.GoogleAPICallError, gexc.RetryError, OSError) as exc:
            raise StoreUnavailable(f"{self._subscription}: {exc}") from exc
