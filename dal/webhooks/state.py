"""What a finished job owes its webhook: pure functions of the job record.

A job announces the status it ended in (`job.succeeded`, `job.failed`, `job.canceled`). The
debt is paid by one 2xx answer, or written off after the last allowed attempt. A dead-lettered
job replayed to success announces its new status as a new event.
"""

from __future__ import annotations

from collections.abc import Sequence

from dal.records import Job, WebhookDelivery


def webhook_event(job: Job) -> str | None:
    return f"job.{job.status.value}" if job.status.is_terminal else None


def message_id(job: Job, event: str) -> str:
    """The Webhook-Id: the same for every attempt of one event, so receivers can dedupe."""
    return f"{job.id}.{event}"


def deliveries_of(job: Job, event: str) -> Sequence[WebhookDelivery]:
    return [d for d in job.webhook_deliveries if d.event == event]


def has_succeeded(job: Job, event: str) -> bool:
    return any(d.succeeded for d in deliveries_of(job, event))


def is_owed(job: Job, *, max_attempts: int) -> bool:
    """True while the job's webhook should still be attempted."""
    event = webhook_event(job)
    if job.webhook_url is None or event is None:
        return False
    attempts = deliveries_of(job, event)
    return len(attempts) < max_attempts and not any(d.succeeded for d in attempts)
