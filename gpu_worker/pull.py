"""Pull mode: the worker takes jobs from a Pub/Sub subscription itself (GKE, VMs), instead of
Pub/Sub pushing them over HTTP (Cloud Run). The same runner decides; the answer becomes an ack
or a nack instead of an HTTP status. Flow control keeps at most `max_in_flight` messages leased,
so a GPU node never hoards work another node could do.
"""

from __future__ import annotations

import logging
from typing import Any

from dal.pubsub.message import JobMessage
from dal.telemetry import job_context
from dal.trace_context import set_traceparent
from gpu_worker.wiring import WorkerServices

log = logging.getLogger(__name__)


class PullWorker:
    def __init__(
        self,
        services: WorkerServices,
        *,
        subscriber: Any,
        jobs_subscription: str,
        dead_letter_subscription: str | None,
        max_in_flight: int,
    ) -> None:
        self._services = services
        self._subscriber = subscriber
        self._jobs_subscription = jobs_subscription
        self._dead_letter_subscription = dead_letter_subscription
        self._max_in_flight = max_in_flight
        self._futures: list[Any] = []

    def start(self) -> None:
        from google.cloud import pubsub_v1

        flow = pubsub_v1.types.FlowControl(max_messages=self._max_in_flight)
        self._futures.append(
            self._subscriber.subscribe(self._jobs_subscription, self.on_job, flow_control=flow)
        )
        if self._dead_letter_subscription:
            self._futures.append(
                self._subscriber.subscribe(
                    self._dead_letter_subscription, self.on_dead_letter, flow_control=flow
                )
            )
        log.info("pulling jobs from %s", self._jobs_subscription)

    def on_job(self, message: Any) -> None:
        received = _decoded(message)
        if received.job_id is None:
            log.error("message %s names no job; acknowledged and dropped", received.message_id)
            message.ack()
            return
        # The job's trace, from the API request that published it.
        set_traceparent(received.traceparent)
        with job_context(received.job_id):
            outcome = self._services.run_job(received.job_id)
            log.info(
                "pulled message %s for job %s (delivery %s): %s",
                received.message_id,
                received.job_id,
                received.delivery_attempt or "?",
                outcome.value,
            )
        if outcome.acknowledge:
            message.ack()
        else:
            message.nack()

    def on_dead_letter(self, message: Any) -> None:
        received = _decoded(message)
        if received.job_id is not None:
            self._services.finisher.dead_letter(received.job_id, received.dead_letter_detail())
        message.ack()

    def stop(self) -> None:
        for future in self._futures:
            future.cancel()
        for future in self._futures:
            try:
                future.result(timeout=30)
            except Exception:  # the cancellation itself surfaces here
                log.debug("streaming pull ended", exc_info=True)
        self._futures.clear()


def _decoded(message: Any) -> JobMessage:
    """A streaming pull's message (google.cloud.pubsub_v1's Message), decoded."""
    return JobMessage.decode(
        message_id=message.message_id,
        data=bytes(message.data),
        attributes=dict(message.attributes),
        delivery_attempt=message.delivery_attempt,
    )
