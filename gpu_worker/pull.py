"""Pull mode: the worker takes jobs from a Pub/Sub subscription itself (GKE, VMs), instead of
Pub/Sub pushing them over HTTP (Cloud Run). The same runner decides; the answer becomes an ack
or a nack instead of an HTTP status. Flow control keeps at most `max_in_flight` messages leased,
so a GPU node never hoards work another node could do.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dal.pubsub.dead_letters import DELIVERY_COUNT_ATTRIBUTE, job_id_of
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
        self._stopped = threading.Event()

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
        attributes = dict(message.attributes)
        job_id = job_id_of(bytes(message.data), attributes)
        if job_id is None:
            log.error("message %s names no job; acknowledged and dropped", message.message_id)
            message.ack()
            return
        # The job's trace, from the API request that published it.
        set_traceparent(attributes.get("traceparent"))
        with job_context(job_id):
            outcome = self._services.run_job(job_id)
            log.info(
                "pulled message %s for job %s (delivery %s): %s",
                message.message_id,
                job_id,
                message.delivery_attempt or "?",
                outcome.value,
            )
        if outcome.acknowledge:
            message.ack()
        else:
            message.nack()

    def on_dead_letter(self, message: Any) -> None:
        attributes = dict(message.attributes)
        job_id = job_id_of(bytes(message.data), attributes)
        if job_id is not None:
            count = attributes.get(DELIVERY_COUNT_ATTRIBUTE, "?")
            self._services.runner.record_dead_letter(
                job_id, detail=f"the queue gave up after {count} delivery attempts"
            )
        message.ack()

    def run_forever(self) -> None:
        self.start()
        self._stopped.wait()
        self.stop()

    def stop(self) -> None:
        self._stopped.set()
        for future in self._futures:
            future.cancel()
        for future in self._futures:
            try:
                future.result(timeout=30)
            except Exception:  # the cancellation itself surfaces here
                log.debug("streaming pull ended", exc_info=True)
        self._futures.clear()
