"""Publishes jobs to a Pub/Sub topic, from which the GPU workers take them (pushed to their HTTP
endpoint or pulled). What a message holds is dal.pubsub.message's business."""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from google.api_core import exceptions as gexc

from dal.errors import QueueUnavailable
from dal.pubsub.message import JOB_ID_ATTRIBUTE, encode
from dal.records import Job
from dal.telemetry import job_context, span

log = logging.getLogger(__name__)


class PubSubJobQueue:
    def __init__(self, publisher: Any, topic_path: str, *, timeout_s: float = 10.0) -> None:
        self._publisher = publisher
        self._topic_path = topic_path
        self._timeout_s = timeout_s

    def enqueue(self, job: Job) -> None:
        # Inside the publish span, so the message's traceparent names it as the parent of
        # the worker's spans.
        with job_context(job.id), span("publish jobs", kind="producer") as publishing:
            data, attributes = encode(job)
            publishing.set_attribute("messaging.destination.name", self._topic_path)
            self.publish(data, attributes)

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        """Publish and wait for the server's ack; returns the message id."""
        try:
            future = self._publisher.publish(self._topic_path, data, **attributes)
            message_id: str = future.result(timeout=self._timeout_s)
        except (gexc.GoogleAPICallError, gexc.RetryError, FutureTimeout, OSError) as exc:
            raise QueueUnavailable(f"could not publish to {self._topic_path}: {exc}") from exc
        log.debug("published job %s as message %s", attributes.get(JOB_ID_ATTRIBUTE), message_id)
        return message_id
