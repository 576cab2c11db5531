"""Delivers finished jobs to their webhooks on background threads, never on the caller's.

`notify(job_id)` only puts the job on a schedule and returns. Worker threads take whatever is
due, make one attempt (sign, POST, record it on the job) and, when the answer is worth another
try, put the job back on the schedule after the retry policy's wait. The job record is the
source of truth: an attempt first re-reads it, and does nothing when the webhook is no longer
owed (a 2xx already recorded, attempts used up).

What a stopped process had scheduled is lost with it; a redrive (at start, then every
`redrive_interval_s`) finds finished jobs that still owe a delivery and schedules them again.
It leaves alone jobs with activity newer than `redrive_grace_s`, which a live process is
probably still working on. The guarantee is therefore at-least-once: a process that dies
between a receiver's 2xx and recording it, or two processes redriving the same job, sends the
same Webhook-Id twice; receivers dedupe on it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from dal.errors import InvalidWebhookUrl, JobNotFound, SendFailed
from dal.ports import JobStore
from dal.records import Job, WebhookDelivery, utcnow
from dal.webhooks.retry import RetryPolicy
from dal.webhooks.sender import WebhookSender
from dal.webhooks.signing import signed_headers
from dal.webhooks.state import deliveries_of, is_owed, message_id, webhook_event
from dal.webhooks.urls import WebhookUrlPolicy

log = logging.getLogger(__name__)

# Not one of Standard Webhooks' headers (nor signed): named in their lowercase style beside them.
EVENT_HEADER = "webhook-event"
MAX_ERROR_LENGTH = 500
# Internal failures (job store down, a bug) of one job before it is left to the redrive.
MAX_INTERNAL_FAILURES = 5


@dataclass(frozen=True)
class RedriveConfig:
    interval_s: float = 60.0  # 0: only at start
    window_s: float = 86_400.0  # jobs created longer ago are given up
    grace_s: float = 90.0
    batch: int = 200


class WebhookDispatcher:
    def __init__(
        self,
        *,
        jobs: JobStore,
        sender: WebhookSender,
        render: Callable[[Job], bytes],
        secret_for: Callable[[str], str],
        urls: WebhookUrlPolicy,
        retry: RetryPolicy,
        redrive: RedriveConfig | None = None,
        workers: int = 2,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._jobs = jobs
        self._sender = sender
        self._render = render
        self._secret_for = secret_for
        self.urls = urls
        self._retry = retry
        self._redrive = redrive or RedriveConfig()
        self._workers = workers
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._schedule: list[tuple[float, int, str]] = []
        self._scheduled: set[str] = set()
        self._failures: dict[str, int] = {}
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- what callers use ------------------------------------------------------------------

    def notify(self, job_id: str) -> None:
        """The job may have finished: deliver its webhook if it owes one. Never blocks."""
        self._schedule_in(job_id, 0.0)

    def start(self) -> None:
        for index in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"webhooks-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        redriver = threading.Thread(target=self._redrive_loop, name="webhooks-redrive", daemon=True)
        redriver.start()
        self._threads.append(redriver)

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking work; an attempt in flight may finish within `timeout`. Scheduled
        retries are dropped (the next process's redrive finds them)."""
        self._stopping.set()
        with self._condition:
            dropped = len(self._schedule)
            self._condition.notify_all()
        deadline = self._monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - self._monotonic()))
        self._threads.clear()
        self._sender.close()
        if dropped:
            log.info("webhooks: %d scheduled deliveries left for the next redrive", dropped)

    # ---- one attempt, and the synchronous loop (tools and tests) ---------------------------

    def attempt(self, job_id: str) -> float | None:
        """Make one delivery attempt if the job owes one and record it. Returns the seconds
        to wait before the next attempt, or None when no other attempt is due."""
        try:
            job = self._jobs.get(job_id)
        except JobNotFound:
            return None
        if not is_owed(job, max_attempts=self._retry.max_attempts):
            return None
        event = webhook_event(job)
        url = job.webhook_url
        if event is None or url is None:  # is_owed checked both; this narrows the types
            return None
        number = len(deliveries_of(job, event)) + 1
        now = self._clock()
        try:
            # Resolved once, here: the sender connects to these checked addresses only.
            target = self.urls.resolve(url)
        except InvalidWebhookUrl as exc:
            self._record(job, WebhookDelivery(number, event, now, error=f"refused: {exc}"))
            return None
        body = self._render(job)
        headers = signed_headers(
            self._secret_for(job.owner),
            message_id=message_id(job, event),
            timestamp=int(now.timestamp()),
            body=body,
        )
        headers[EVENT_HEADER] = event
        status: int | None = None
        error: str | None = None
        try:
            status = self._sender.post(target, body, headers)
        except SendFailed as exc:
            error = str(exc)[:MAX_ERROR_LENGTH]
        self._record(job, WebhookDelivery(number, event, now, status_code=status, error=error))
        delay = self._retry.next_delay(number, status)
        log.info(
            "webhook %s of job %s, attempt %d: %s%s",
            event,
            job.id,
            number,
            status if status is not None else error,
            "" if delay is None else f"; next in {delay:.1f} s",
        )
        return delay

    def deliver(self, job_id: str) -> Job:
        """Attempt until done, sleeping between attempts on this thread; returns the job."""
        delay = self.attempt(job_id)
        while delay is not None:
            self._sleep(delay)
            delay = self.attempt(job_id)
        return self._jobs.get(job_id)

    def redrive(self) -> int:
        """Schedule finished jobs that still owe a delivery and that nothing touched for
        `grace_s`. Returns how many were scheduled."""
        now = self._clock()
        owed = self._jobs.list_owed_webhooks(
            since=now - timedelta(seconds=self._redrive.window_s),
            max_attempts=self._retry.max_attempts,
            limit=self._redrive.batch,
        )
        cutoff = now - timedelta(seconds=self._redrive.grace_s)
        scheduled = 0
        for job in owed:
            if _last_activity(job) <= cutoff and self._schedule_in(job.id, 0.0):
                scheduled += 1
        if scheduled:
            log.info("webhooks: redrive scheduled %d owed deliveries", scheduled)
        return scheduled

    # ---- threads ---------------------------------------------------------------------------

    def _record(self, job: Job, delivery: WebhookDelivery) -> None:
        self._jobs.record_webhook_delivery(job.id, delivery)

    def _schedule_in(self, job_id: str, delay_s: float) -> bool:
        with self._condition:
            if self._stopping.is_set() or job_id in self._scheduled:
                return False
            self._scheduled.add(job_id)
            due = self._monotonic() + delay_s
            heapq.heappush(self._schedule, (due, next(self._sequence), job_id))
            self._condition.notify()
            return True

    def _next_due(self) -> str | None:
        with self._condition:
            while not self._stopping.is_set():
                if self._schedule:
                    due, _, job_id = self._schedule[0]
                    wait = due - self._monotonic()
                    if wait <= 0:
                        heapq.heappop(self._schedule)
                        return job_id
                    self._condition.wait(wait)
                else:
                    self._condition.wait()
            return None

    def _work(self) -> None:
        while (job_id := self._next_due()) is not None:
            try:
                delay = self.attempt(job_id)
                self._failures.pop(job_id, None)
            except Exception:
                failures = self._failures.get(job_id, 0) + 1
                self._failures[job_id] = failures
                log.warning("webhook of job %s: attempt failed inside", job_id, exc_info=True)
                delay = (
                    self._retry.delay_after(failures) if failures < MAX_INTERNAL_FAILURES else None
                )
                if delay is None:
                    self._failures.pop(job_id, None)
            with self._condition:
                self._scheduled.discard(job_id)
            if delay is not None:
                self._schedule_in(job_id, delay)

    def _redrive_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.redrive()
            except Exception:
                log.warning("webhooks: redrive failed", exc_info=True)
            if self._redrive.interval_s <= 0 or self._stopping.wait(self._redrive.interval_s):
                return


def _last_activity(job: Job) -> datetime:
    moments = [job.finished_at or job.updated_at]
    moments.extend(d.attempted_at for d in job.webhook_deliveries)
    return max(moments)
