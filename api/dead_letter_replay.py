"""Operator view of dead letters: list them, replay them onto the jobs topic once the cause is
fixed, or purge them. Every action has a dry run, and messages not acted on stay in the box."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from dal.errors import JobNotFound, TransitionConflict
from dal.ports import JobStore
from dal.pubsub import DeadLetter, DeadLetterBox, PubSubJobQueue, job_message
from dal.records import Job, JobStatus, is_dead_lettered, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to act on. Empty `job_ids` and `all` False selects nothing."""

    job_ids: frozenset[str] = frozenset()
    all: bool = False
    older_than_s: float | None = None

    def matches(self, letter: DeadLetter, now: datetime) -> bool:
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


class DeadLetterReplay:
    def __init__(
        self,
        *,
        box: DeadLetterBox,
        jobs: JobStore,
        queue: PubSubJobQueue,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._box = box
        self._jobs = jobs
        self._queue = queue
        self._clock = clock

    def rows(self) -> list[DeadLetterRow]:
        letters = self._box.take_all()
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
        letters = self._box.take_all()
        now = self._clock()
        chosen = [letter for letter in letters if selection.matches(letter, now)]
        untouched = [letter for letter in letters if letter not in chosen]
        results: list[ActionResult] = []
        done: list[DeadLetter] = []
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

    def _replay_one(self, letter: DeadLetter) -> ActionResult:
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
        data, attributes = job_message(job)
        self._queue.publish(data, {**letter.attributes_for_replay(), **attributes})
        log.info("replayed dead-lettered job %s", job.id)
        return ActionResult(job.id, "replayed", f"requeued after {job.attempts} attempts")

    def _purge_one(self, letter: DeadLetter) -> ActionResult:
        return ActionResult(letter.job_id, "purged", self._describe(letter))

    def _describe(self, letter: DeadLetter) -> str:
        return self._row(letter, self._clock()).last_error or "-"

    def _row(self, letter: DeadLetter, now: datetime) -> DeadLetterRow:
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
