"""The fair dispatcher: between the job store and the queue, it decides when a recorded job is
handed to the GPUs, and which one is next.

A job is recorded as before, then joins the line (dal.ports.FairLine). The line lets jobs
through while fewer than DISPATCH_CAPACITY are handed over and not yet ended, in weighted fair
order between owners (dal.fair_share); whoever was let through publishes them. So

* an idle service hands a job over in the same call that admits it: no added wait;
* a busy one keeps the rest in line, where a newcomer is one turn away, not behind everyone's
  backlog, and where its owner can see its place (`place`);
* every ending frees a slot through the job finisher's one "job ended" path (`ended`, a
  handler of dal.finisher), in whichever process ends the job (a worker, an API's cancel), and
  that process hands the next jobs over. A job taken back by the recovery (dead worker, lost
  message) stays handed over; one that is reaped ends through the finisher like any other.

Any number of processes run a Dispatcher on one line: taking is atomic in the line, so a job is
handed over once and the count never passes the capacity. What a process dying halfway leaves
behind is put right by the others' sweep passes (`reconcile`, and api.outbox_sweeper): a job let
through but never published is published once its grace period is over; a slot whose job ended
without a release (a lost handler) is freed; a line that lost its state (an empty Redis, a new
embedded process) is rebuilt from the job store. docs/architecture.md ("The fair dispatcher")
has the capacity arithmetic.

Fail open: with the line's store down, a job goes straight to the queue, as it did before
there was a line. An outage costs fairness, never a job.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dal.errors import JobNotFound, QueueUnavailable, StoreUnavailable
from dal.failpoints import Failpoints
from dal.ports import FairLine, HandedOver, JobQueue, JobStore, LinePlace, Ticket
from dal.records import Job, JobStatus, QueuePlace, utcnow
from dal.telemetry.metrics import (
    DISPATCH_JOBS,
    DISPATCH_OLDEST_WAITING_SECONDS,
    DISPATCH_OWNER_WAIT_SECONDS,
    DISPATCH_WAIT_SECONDS,
    DISPATCHED,
)

log = logging.getLogger(__name__)

# A line with this capacity hands every job over at once (first come, first served).
UNLIMITED = sys.maxsize
RESTORE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Reconciled:
    restored: bool
    freed: int  # slots of jobs that had ended without a release
    handed_over: int  # jobs handed over by the refill


class Dispatcher:
    def __init__(
        self,
        jobs: JobStore,
        queue: JobQueue,
        line: FairLine,
        *,
        capacity: int,
        marks_hand_overs: bool = True,
        grace_s: float = 60.0,
        reconcile_batch: int = 500,
        clock: Callable[[], datetime] = utcnow,
        failpoints: Failpoints | None = None,
    ) -> None:
        """`marks_hand_overs`: record each publish on the job (enqueued_at), for the outbox
        sweeper and the recovery of lost messages. False for the inline queue, whose jobs are
        marked when recorded and whose process rebuilds its line from the store at start.
        `grace_s`: how long a hand-over may take before a sweep pass calls it stranded."""
        if capacity < 1:
            raise ValueError("the dispatch capacity must be at least 1")
        self._jobs = jobs
        self._queue = queue
        self._line = line
        self._capacity = capacity
        self._marks = marks_hand_overs
        self._grace = timedelta(seconds=grace_s)
        self._batch = reconcile_batch
        self._clock = clock
        self._failpoints = failpoints or Failpoints()
        # Endings in this process's threads refill one at a time, so jobs are published in
        # the order the line let them through (a batch of endings would race otherwise).
        self._refill_lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def line(self) -> FairLine:
        return self._line

    # ---- admission --------------------------------------------------------------------------

    def admit(self, job: Job, *, weight: float = 1.0) -> Job:
        """Put a just-recorded job in line and publish whatever the line lets through. Returns
        the job's record (marked when it was published). Raises QueueUnavailable when its own
        publish failed: the caller fails it, as it would have without a line."""
        ticket = Ticket(job.id, job.owner, cost=float(job.params.num_images), weight=weight)
        try:
            handed = self._line.admit(ticket, capacity=self._capacity)
        except StoreUnavailable as exc:
            log.warning("fair line unavailable, job %s goes straight to the queue: %s", job.id, exc)
            self._queue.enqueue(job)
            return self._mark(job)
        self._failpoints.hit("after_hand_over")
        own = next((h for h in handed if h.job_id == job.id), None)
        others = [h for h in handed if h is not own]
        try:
            if own is not None:
                self._queue.enqueue(job)
                self._observe(own)
                marked = self._mark(job)
                # The submit answers with the job as admitted: a fast worker may have ended it
                # already, which its owner reads next (202 means "accepted", not "done").
                return marked if marked.status == JobStatus.QUEUED else job
            return job
        finally:
            self._publish_all(others)

    def hand_over_now(self, job: Job) -> Job:
        """Publish the job at once, counted against the capacity like any other, and mark it:
        an operator's replay of a dead-lettered job, or a job the outbox sweeper found
        stranded (let through, or recorded by a process that died before it joined the line).
        Raises QueueUnavailable."""
        try:
            self._line.hand_over_now(job.id)
        except StoreUnavailable as exc:
            log.warning("fair line unavailable; job %s handed over uncounted: %s", job.id, exc)
        self._queue.enqueue(job)
        return self._mark(job)

    def handed_over_within(self, job_id: str, seconds: float) -> bool:
        """True when the line let the job through less than `seconds` ago: its publisher may
        still be at work."""
        try:
            at = self._line.handed_over_at(job_id)
        except StoreUnavailable:
            return False
        return at is not None and self._clock().timestamp() - at < seconds

    # ---- endings ------------------------------------------------------------------------------

    def ended(self, job: Job) -> None:
        """The job finisher's handler: the job leaves the line; when it held a slot, the next
        jobs are handed over. Raises StoreUnavailable (the finisher logs it; a sweep pass frees
        the slot later)."""
        if self._line.release(job.id):
            self.refill()

    def refill(self) -> int:
        """Hand over as many waiting jobs as there is room for; returns how many."""
        with self._refill_lock:
            try:
                handed = self._line.take(capacity=self._capacity)
            except StoreUnavailable as exc:
                log.warning("fair line unavailable, nothing handed over: %s", exc)
                return 0
            self._failpoints.hit("after_hand_over")
            return self._publish_all(handed)

    # ---- a place in line ------------------------------------------------------------------

    def place(self, job: Job) -> QueuePlace | None:
        """Where a queued job stands: position 0 once handed over. None for a job in any other
        status, or when the line cannot be read (the job view then omits the place)."""
        if job.status != JobStatus.QUEUED:
            return None
        try:
            found = self._line.place(job.id)
        except StoreUnavailable:
            return None
        return self._queue_place(found)

    def places(self, jobs: Sequence[Job]) -> dict[str, QueuePlace]:
        """`place` for a page of jobs, with one read of the line: keyed by job id, for the
        queued jobs only; empty when the line cannot be read."""
        queued = [job.id for job in jobs if job.status == JobStatus.QUEUED]
        if not queued:
            return {}
        try:
            found = self._line.places(queued)
        except StoreUnavailable:
            return {}
        return {job_id: self._queue_place(found.get(job_id)) for job_id in queued}

    def _queue_place(self, found: LinePlace | None) -> QueuePlace:
        if found is None:
            return QueuePlace(position=0, estimated_start_at=None)
        estimate = None
        if found.ends_per_s:
            # It is handed over when position + 1 slots have freed up, one per ending.
            estimate = self._clock() + timedelta(seconds=(found.position + 1) / found.ends_per_s)
        return QueuePlace(position=found.position, estimated_start_at=estimate)

    def is_waiting(self, job_id: str) -> bool:
        """True when the job waits in line (not stranded: the outbox sweeper leaves it be)."""
        try:
            return self._line.place(job_id) is not None
        except StoreUnavailable:
            return False

    # ---- repair ---------------------------------------------------------------------------

    def reconcile(self) -> Reconciled:
        """One sweep pass: rebuild a line that lost its state, free the slots of jobs that
        ended without a release, sample the metrics, and hand over what fits. Raises
        StoreUnavailable when the line or the store cannot be read."""
        restored = False
        if self._line.needs_restore():
            self._restore()
            restored = True
        cutoff = (self._clock() - self._grace).timestamp()
        freed = 0
        for job_id in self._line.handed_over_before(cutoff, limit=self._batch):
            if self._ended_or_gone(job_id) and self._line.release(job_id):
                freed += 1
        if freed:
            log.warning("dispatcher: freed %d slots of jobs that ended unreleased", freed)
        handed = self.refill()
        self._sample()
        return Reconciled(restored=restored, freed=freed, handed_over=handed)

    def _ended_or_gone(self, job_id: str) -> bool:
        try:
            return self._jobs.get(job_id).status.is_terminal
        except JobNotFound:
            return True

    def _restore(self) -> None:
        queued = self._jobs.list_by_status(JobStatus.QUEUED, limit=RESTORE_LIMIT)
        running = self._jobs.list_by_status(JobStatus.RUNNING, limit=RESTORE_LIMIT)
        if self._marks:
            waiting = [j for j in queued if j.enqueued_at is None]
            handed = [j.id for j in queued if j.enqueued_at is not None]
        else:
            # The inline queue died with its process: every queued job waits again.
            waiting, handed = list(queued), []
        handed += [j.id for j in running]
        # The keys' weights are not on the jobs: restored jobs wait with weight 1.
        tickets = [Ticket(j.id, j.owner, cost=float(j.params.num_images)) for j in waiting]
        self._line.restore(tickets, handed)
        log.info("dispatcher: line restored, %d waiting, %d handed over", len(tickets), len(handed))

    def _sample(self) -> None:
        depth = self._line.depth()
        DISPATCH_JOBS.labels("waiting").set(depth.waiting)
        DISPATCH_JOBS.labels("handed_over").set(depth.handed_over)
        now = self._clock().timestamp()
        DISPATCH_OLDEST_WAITING_SECONDS.clear()
        for owner, since in self._line.waiting_since().items():
            DISPATCH_OLDEST_WAITING_SECONDS.labels(owner).set(max(0.0, now - since))

    # ---- publishing -----------------------------------------------------------------------

    def _publish_all(self, handed: Sequence[HandedOver]) -> int:
        return sum(self._publish(h) for h in handed)

    def _publish(self, handed: HandedOver) -> bool:
        """Publish a job the line let through, unless it ended meanwhile (then its slot goes
        back). A failed publish leaves it handed over and unpublished: the outbox sweeper
        publishes it after its grace period."""
        try:
            job = self._jobs.get(handed.job_id)
        except JobNotFound:
            self._line.release(handed.job_id)
            return False
        except StoreUnavailable as exc:
            log.warning("job %s handed over but not published: %s", handed.job_id, exc)
            return False
        if job.status.is_terminal:
            self._line.release(job.id)
            return False
        if job.status != JobStatus.QUEUED or (self._marks and job.enqueued_at is not None):
            return False  # published already (a line rebuilt while it was on its way)
        try:
            self._queue.enqueue(job)
        except QueueUnavailable as exc:
            log.warning("job %s handed over but not published: %s", job.id, exc)
            return False
        self._mark(job)
        self._observe(handed)
        return True

    def _mark(self, job: Job) -> Job:
        if not self._marks:
            return job
        try:
            return self._jobs.mark_enqueued(job.id, at=self._clock())
        except StoreUnavailable as exc:
            # The message is out; without the marker the sweeper publishes it once more,
            # which the workers' exactly-once claim makes harmless.
            log.warning("job %s was queued but not marked enqueued: %s", job.id, exc)
            return job

    @staticmethod
    def _observe(handed: HandedOver) -> None:
        DISPATCH_WAIT_SECONDS.observe(handed.waited_s)
        DISPATCHED.labels(handed.owner).inc()
        DISPATCH_OWNER_WAIT_SECONDS.labels(handed.owner).inc(handed.waited_s)
