"""Pull mode: the worker takes jobs from a Pub/Sub subscription itself (GKE, VMs), instead of
Pub/Sub pushing them over HTTP (Cloud Run). The same runner decides; the answer becomes an ack
or a nack instead of an HTTP status. Flow control keeps at most `max_in_flight` messages leased,
so a GPU node never hoards work another node could do.

Stopping (SIGTERM: a scale-in, a rollout, a node drain) stops pulling, nacks the messages leased
but not started, and lets the running jobs finish and acknowledge for up to SHUTDOWN_GRACE_S
before the model and the stores close; the pod's grace period is longer than that.
"""

from __future__ import annotations

import logging
import time
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
        shutdown_grace_s: float = 30.0,
    ) -> None:
        self._services = services
        self._subscriber = subscriber
        self._jobs_subscription = jobs_subscription
        self._dead_letter_subscription = dead_letter_subscription
        self._max_in_flight = max_in_flight
        self._shutdown_grace_s = shutdown_grace_s
        self._futures: list[Any] = []

    def start(self) -> None:
        from google.cloud import pubsub_v1

        flow = pubsub_v1.types.FlowControl(max_messages=self._max_in_flight)
        # Cancelling a stream then waits for its running callbacks (the jobs), which still ack
        # or nack; without it the worker would close the model under them.
        self._futures.append(
            self._subscriber.subscribe(
                self._jobs_subscription,
                self.on_job,
                flow_control=flow,
                await_callbacks_on_shutdown=True,
            )
        )
        if self._dead_letter_subscription:
            self._futures.append(
                self._subscriber.subscribe(
                    self._dead_letter_subscription,
                    self.on_dead_letter,
                    flow_control=flow,
                    await_callbacks_on_shutdown=True,
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
        """Stop pulling and wait, at most shutdown_grace_s in all, for the running jobs."""
        deadline = time.monotonic() + self._shutdown_grace_s
        for future in self._futures:
            future.cancel()
        for future in self._futures:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.warning(
                    "jobs still running after SHUTDOWN_GRACE_S=%ss; stopping anyway (their "
                    "messages are redelivered)",
                    self._shutdown_grace_s,
                )
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
