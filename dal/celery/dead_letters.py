"""The Celery dead-letter box: a Redis list (CELERY_DEAD_LETTER_KEY) of the tasks that ran out
of attempts, one JSON document each, oldest first. It offers what the replay command needs,
with the same surface as the Pub/Sub box (take_all, acknowledge, release).

Reading does not remove anything (there is no lease to release): `acknowledge` removes the
exact entries it is given, so letters added meanwhile and letters not acted on stay.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dal.redis.client import unavailable_on_outage


@dataclass(frozen=True, slots=True)
class CeleryDeadLetter:
    raw: str  # the list entry, exactly as stored (what acknowledge removes)
    job_id: str | None
    task_id: str
    attempts: int | None
    queue: str | None
    last_error: str
    dead_lettered_at: datetime | None
    traceparent: str | None

    @property
    def message_id(self) -> str:
        return self.task_id

    @property
    def delivery_count(self) -> int | None:
        return self.attempts

    @property
    def source_subscription(self) -> str | None:
        """Where it came from: the Celery queue (named as the Pub/Sub letter's attribute, so
        the replay treats both boxes alike)."""
        return self.queue

    def age_s(self, now: datetime) -> float | None:
        if self.dead_lettered_at is None:
            return None
        return (now - self.dead_lettered_at).total_seconds()


def letter_document(
    *,
    job_id: str,
    task_id: str,
    attempts: int,
    queue: str,
    last_error: str,
    at: datetime,
    traceparent: str | None,
) -> str:
    return json.dumps(
        {
            "job_id": job_id,
            "task_id": task_id,
            "attempts": attempts,
            "queue": queue,
            "last_error": last_error,
            "dead_lettered_at": at.astimezone(UTC).isoformat(),
            "traceparent": traceparent,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def parse_letter(raw: str) -> CeleryDeadLetter:
    """A letter from a list entry; one that is not ours still comes back (with no job), so it
    can be listed and purged."""
    try:
        data: Any = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {}
    job_id = data.get("job_id")
    attempts = data.get("attempts")
    at: datetime | None = None
    if isinstance(data.get("dead_lettered_at"), str):
        try:
            at = datetime.fromisoformat(data["dead_lettered_at"])
        except ValueError:
            at = None
    return CeleryDeadLetter(
        raw=raw,
        job_id=job_id if isinstance(job_id, str) and job_id else None,
        task_id=str(data.get("task_id") or "-"),
        attempts=attempts if isinstance(attempts, int) else None,
        queue=data.get("queue") if isinstance(data.get("queue"), str) else None,
        last_error=str(data.get("last_error") or ""),
        dead_lettered_at=at,
        traceparent=data.get("traceparent") if isinstance(data.get("traceparent"), str) else None,
    )


class CeleryDeadLetterBox:
    def __init__(self, client: Any, key: str) -> None:
        """`client`: a redis-py client with decode_responses=True (dal.redis.client)."""
        self._client = client
        self._key = key

    @property
    def key(self) -> str:
        return self._key

    def add(
        self,
        *,
        job_id: str,
        task_id: str,
        attempts: int,
        queue: str,
        last_error: str,
        at: datetime,
        traceparent: str | None = None,
    ) -> None:
        document = letter_document(
            job_id=job_id,
            task_id=task_id,
            attempts=attempts,
            queue=queue,
            last_error=last_error,
            at=at,
            traceparent=traceparent,
        )
        with unavailable_on_outage(f"dead-letter list {self._key}"):
            self._client.rpush(self._key, document)

    def depth(self) -> int:
        with unavailable_on_outage(f"dead-letter list {self._key}"):
            return int(self._client.llen(self._key))

    def take_all(self, *, limit: int = 10_000) -> list[CeleryDeadLetter]:
        """Every letter (up to `limit`), oldest first. They stay in the list until acknowledged."""
        with unavailable_on_outage(f"dead-letter list {self._key}"):
            entries = self._client.lrange(self._key, 0, limit - 1)
        return [parse_letter(str(entry)) for entry in entries]

    def acknowledge(self, letters: Iterable[CeleryDeadLetter]) -> None:
        """Remove these letters (each entry once)."""
        chosen = list(letters)
        if not chosen:
            return
        with unavailable_on_outage(f"dead-letter list {self._key}"):
            pipe = self._client.pipeline(transaction=False)
            for letter in chosen:
                pipe.lrem(self._key, 1, letter.raw)
            pipe.execute()

    def release(self, letters: Iterable[CeleryDeadLetter]) -> None:
        """Leave these letters in the box: nothing to do, reading took no lease."""
        del letters
