"""Operator view of dead letters: list them, replay them onto the jobs queue once the cause is
fixed, or purge them. Every action has a dry run, and messages not acted on stay in the box.

The same replay serves every queue that dead-letters: Pub/Sub (the dead-letter subscription)
and Celery (a Redis list). Each brings a box of letters and a way to requeue a reopened job;
`build_replay` picks them from the settings.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from dal.core import Core
from dal.errors import JobNotFound, QueueUnavailable, StoreUnavailable, TransitionConflict
from dal.finisher import JobFinisher
from dal.ports import FairLine, JobStore
from dal.records import DEAD_LETTERED, Job, JobError, JobStatus, is_dead_lettered, utcnow

if TYPE_CHECKING:
    from dal.celery import CeleryDeadLetter
    from dal.pubsub import DeadLetter

log = logging.getLogger(__name__)


class Letter(Protocol):
    """One dead letter, whichever queue it came from."""

    @property
    def job_id(self) -> str | None: ...

    @property
    def message_id(self) -> str: ...

    @property
    def delivery_count(self) -> int | None: ...

    @property
    def source_subscription(self) -> str | None:
        """Where it came from: a Pub/Sub subscription, a Celery queue."""
        ...

    def age_s(self, now: datetime) -> float | None: ...


L = TypeVar("L", bound=Letter)


class LetterBox(Protocol[L]):
    def take_all(self) -> Sequence[L]:
        """Every letter waiting; each must then be acknowledged or released."""
        ...

    def acknowledge(self, letters: Iterable[L]) -> None:
        """Done with these: remove them from the box."""
        ...

    def release(self, letters: Iterable[L]) -> None:
        """Leave these in the box."""
        ...


# Put a job (reopened, queued) back on the jobs queue; the letter says how it travelled.
Requeue = Callable[[Job, L], None]


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to act on. Empty `job_ids` and `all` False selects nothing."""

    job_ids: frozenset[str] = frozenset()
    all: bool = False
    older_than_s: float | None = None

    def matches(self, letter: Letter, now: datetime) -> bool:
        if not (self.all or (letter.job_id is not None and letter.job_id in self.job_ids)):
            return False
        if self.older_than_s is not None:
            age = letter.age_s(now)
            return age is not None and age >= self.older_than_s
        return True


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    job_id: str | None
    message_id: str
    delivery_count: int | None
    source: str | None
    age_s: float | None
    job_status: str
    last_error: str


@dataclass(frozen=True, slots=True)
class ActionResult:
    job_id: str | None
    action: str  # replayed, would-replay, purged, would-purge, skipped
    detail: str


class DeadLetterReplay(Generic[L]):
    def __init__(
        self,
        *,
        box: LetterBox[L],
        jobs: JobStore,
        finisher: JobFinisher,
        requeue: Requeue[L],
        clock: Callable[[], datetime] = utcnow,
        line: FairLine | None = None,
    ) -> None:
        """`line`: the line for the GPUs, where a replayed job counts as handed over (an
        operator's replay does not wait its turn, but it takes a slot)."""
        self._line = line
        self._box = box
        self._jobs = jobs
        self._finisher = finisher
        self._requeue = requeue
        self._clock = clock

    def rows(self) -> list[DeadLetterRow]:
        letters = list(self._box.take_all())
        try:
            now = self._clock()
            return [self._row(letter, now) for letter in letters]
        finally:
            self._box.release(letters)

    def replay(self, selection: Selection, *, dry_run: bool = False) -> list[ActionResult]:
        return self._act(selection, dry_run=dry_run, replay=True)

    def purge(self, selection: Selection, *, dry_run: bool = False) -> list[ActionResult]:
        return self._act(selection, dry_run=dry_run, replay=False)

    def _act(self, selection: Selection, *, dry_run: bool, replay: bool) -> list[ActionResult]:
        letters = list(self._box.take_all())
        now = self._clock()
        chosen = [letter for letter in letters if selection.matches(letter, now)]
        untouched = [letter for letter in letters if letter not in chosen]
        results: list[ActionResult] = []
        done: list[L] = []
        try:
            for letter in chosen:
                if dry_run:
                    verb = "would-replay" if replay else "would-purge"
                    results.append(ActionResult(letter.job_id, verb, self._describe(letter)))
                    continue
                result = self._replay_one(letter) if replay else self._purge_one(letter)
                results.append(result)
                if result.action != "skipped":
                    done.append(letter)
        finally:
            self._box.acknowledge(done)
            self._box.release(untouched + [letter for letter in chosen if letter not in done])
        return results

    def _count_in_line(self, job: Job) -> None:
        if self._line is None:
            return
        try:
            self._line.hand_over_now(job.id)
        except StoreUnavailable as exc:
            log.warning("replayed job %s is not counted in the line: %s", job.id, exc)

    def _replay_one(self, letter: L) -> ActionResult:
        if letter.job_id is None:
            return ActionResult(None, "skipped", "message names no job; purge it instead")
        try:
            job = self._jobs.get(letter.job_id)
        except JobNotFound:
            return ActionResult(letter.job_id, "skipped", "job does not exist; purge it instead")
        if job.status.is_terminal and not is_dead_lettered(job):
            # Finished after all (a late success): nothing to run, the letter is stale.
            return ActionResult(letter.job_id, "purged", f"job already {job.status.value}")
        if is_dead_lettered(job):
            try:
                job = self._jobs.reopen_dead_lettered(job.id)
            except TransitionConflict as conflict:
                return ActionResult(
                    letter.job_id, "skipped", f"job changed meanwhile: {conflict.job.status}"
                )
        try:
            self._requeue(job, letter)
        except QueueUnavailable as exc:
            # Reopened but not published: end it dead-lettered again, so it neither sits
            # queued with no message behind it nor leaves the box (the letter is kept).
            self._fail_again(job, f"the replay could not publish it: {exc}")
            return ActionResult(job.id, "skipped", f"publish failed: {exc}")
        self._count_in_line(job)
        log.info("replayed dead-lettered job %s", job.id)
        return ActionResult(job.id, "replayed", f"requeued after {job.attempts} attempts")

    def _fail_again(self, job: Job, detail: str) -> None:
        # A conflict: a worker got it after all (from an earlier message), and it runs.
        with contextlib.suppress(TransitionConflict):
            self._finisher.fail(
                job.id, JobError(DEAD_LETTERED, detail), expected={JobStatus.QUEUED}
            )

    def _purge_one(self, letter: L) -> ActionResult:
        return ActionResult(letter.job_id, "purged", self._describe(letter))

    def _describe(self, letter: L) -> str:
        return self._row(letter, self._clock()).last_error or "-"

    def _row(self, letter: L, now: datetime) -> DeadLetterRow:
        job: Job | None = None
        if letter.job_id is not None:
            try:
                job = self._jobs.get(letter.job_id)
            except JobNotFound:
                job = None
        status = job.status.value if job else "missing"
        error = f"{job.error.code}: {job.error.message}" if job and job.error else ""
        if job is not None and job.status == JobStatus.FAILED and not error:
            error = "failed"
        return DeadLetterRow(
            job_id=letter.job_id,
            message_id=letter.message_id,
            delivery_count=letter.delivery_count,
            source=letter.source_subscription,
            age_s=letter.age_s(now),
            job_status=status,
            last_error=error,
        )


def select(job_ids: Collection[str], *, all_: bool, older_than_s: float | None) -> Selection:
    return Selection(job_ids=frozenset(job_ids), all=all_, older_than_s=older_than_s)


class Replay(Protocol):
    """What the admin command uses, whichever queue's letters it is about."""

    def rows(self) -> list[DeadLetterRow]: ...

    def replay(self, selection: Selection, *, dry_run: bool = False) -> list[ActionResult]: ...

    def purge(self, selection: Selection, *, dry_run: bool = False) -> list[ActionResult]: ...


def build_replay(core: Core) -> Replay:
    """The replay for the configured queue: JOB_QUEUE=pubsub (the dead-letter subscription,
    republished to the jobs topic with the original attributes) or celery (the dead-letter
    list, sent again as a task). Raises ValueError for a queue that keeps no dead letters."""
    settings = core.settings
    if settings.job_queue == "pubsub":
        return _pubsub_replay(core)
    if settings.job_queue == "celery":
        return _celery_replay(core)
    raise ValueError(
        f"dead letters exist with JOB_QUEUE=pubsub or celery, not {settings.job_queue}"
    )


def _pubsub_replay(core: Core) -> DeadLetterReplay[DeadLetter]:
    from dal.pubsub import DeadLetterBox, PubSubJobQueue, job_message
    from dal.pubsub.client import make_publisher, make_subscriber, subscription_path, topic_path

    settings, closers = core.settings, core.closers
    subscriber = make_subscriber()
    closers.append(subscriber.close)
    publisher = make_publisher()
    closers.append(publisher.stop)
    queue = PubSubJobQueue(publisher, topic_path(settings.gcp_project, settings.pubsub_topic))

    def requeue(job: Job, letter: DeadLetter) -> None:
        data, attributes = job_message(job)
        queue.publish(data, {**letter.attributes_for_replay(), **attributes})

    box = DeadLetterBox(
        subscriber,
        subscription_path(settings.gcp_project, settings.pubsub_dead_letter_subscription),
    )
    return DeadLetterReplay(
        box=box, jobs=core.jobs, finisher=core.finisher, requeue=requeue, line=core.line
    )


def _celery_replay(core: Core) -> DeadLetterReplay[CeleryDeadLetter]:
    from dal.celery import (
        CeleryDeadLetterBox,
        CeleryJobQueue,
        dead_letter_redis_url,
        make_celery_app,
    )
    from dal.redis.client import make_redis_client

    settings, closers = core.settings, core.closers
    client = make_redis_client(dead_letter_redis_url(settings))
    closers.append(client.close)
    app = make_celery_app(settings)
    closers.append(app.close)
    queue = CeleryJobQueue(app, queue=settings.celery_queue)

    def requeue(job: Job, letter: CeleryDeadLetter) -> None:
        queue.publish(job.id, traceparent=letter.traceparent)

    box = CeleryDeadLetterBox(client, settings.celery_dead_letter_key)
    return DeadLetterReplay(
        box=box, jobs=core.jobs, finisher=core.finisher, requeue=requeue, line=core.line
    )
