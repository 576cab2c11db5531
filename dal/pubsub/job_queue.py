"""Publishes jobs to a Pub/Sub topic; push subscriptions deliver them to the GPU workers.

The message carries the job id in its data and, as attributes, what a worker or an operator
wants without a database read (job id, model, owner digest) plus the W3C trace context, so the
API's and the worker's log lines of one job join up.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from google.api_core import exceptions as gexc

from dal.errors import QueueUnavailable
from dal.records import Job
from dal.telemetry import job_context, span
from dal.trace_context import current_traceparent

log = logging.getLogger(__name__)


def job_message(job: Job) -> tuple[bytes, dict[str, str]]:
    """The message for a job: (data, attributes)."""
    data = json.dumps({"job_id": job.id}, separators=(",", ":")).encode()
    attributes = {
        "job_id": job.id,
        "model": job.model[:1024],
        "owner_digest": hashlib.sha256(job.owner.encode()).hexdigest()[:16],
    }
    traceparent = current_traceparent()
    if traceparent:
        attributes["traceparent"] = traceparent
    return data, attributes


class PubSubJobQueue:
    def __init__(self, publisher: Any, topic_path: str, *, timeout_s: float = 10.0) -> None:
        self._publisher = publisher
        self._topic_path = topic_path
        self._timeout_s = timeout_s

    def enqueue(self, job: Job) -> None:
        # Inside the publish span, so the message's traceparent names it as the parent of
        # the worker's spans.
        with job_context(job.id), span("publish jobs", kind="producer") as publishing:
            data, attributes = job_message(job)
            publishing.set_attribute("messaging.destination.name", self._topic_path)
            self.publish(data, attributes)

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        """Publish and wait for the server's ack; returns the message id."""
        try:
            future = self._publisher.publish(self._topic_path, data, **attributes)
            message_id: str = future.result(timeout=self._timeout_s)
        except (gexc.GoogleAPICallError, gexc.RetryError, FutureTimeout, OSError) as exc:
            raise QueueUnavailable(f"could not publish to {self._topic_path}: {exc}") from exc
        log.debug("published job %s as message %s", attributes.get("job_id"), message_id)
        return message_id
