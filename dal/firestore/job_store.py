"""JobStore on Cloud Firestore (native mode).

One document per job in `{prefix}jobs`, its id the job id. Every conditional change (claim,
transition, release, reopen, progress, webhook delivery, enqueue mark) is one conditional
write that holds no lock: read the job, compute the new record, and update only the fields
that changed, on the precondition that the document's update time is still the one read
("the target document must exist and have been last updated at that time":
https://cloud.google.com/ruby/docs/reference/google-cloud-firestore-v1/latest/Google-Cloud-Firestore-V1-Precondition).
If another writer got in between, the write fails with FAILED_PRECONDITION and the change is
read and computed again; so of several concurrent callers exactly one sees the status it
expects, and the others read the new status and conflict at once. Nothing is written when
nothing changes.

Why not a transaction: Firestore's default (pessimistic) concurrency locks what a transaction
reads and resolves contention by delaying or aborting contenders
(https://cloud.google.com/firestore/docs/transaction-data-contention). The emulator breaks
such deadlocks only by timing out, so ten deliveries of one job claiming it in ten
transactions kept aborting each other past their deadline, and nine were answered 503. A
conditional write has no lock to wait for: the losers of a claim race learn so in one round
trip, on real Firestore and on the emulator alike.

Every call gives up after `timeout_s`, retries and contention included (StoreUnavailable).

An idempotency key is made unique per owner by a side document
`{prefix}idempotency_keys/{sha256(owner NUL key)}` created in the same transaction as the job
(two documents: the one change that is still a transaction, dal.firestore.client
.run_transaction).

An admission under a quota (create_within) is a conditional write too, of three documents
in one atomic batch: the owner's admission document `{prefix}owner_admissions/{sha256(owner)}`
is read first, then the owner's jobs in flight and images of the day are counted
(aggregation queries); the batch creates the job (and its key document) and rewrites the
admission document on the precondition that it is still as read. Every admission of an owner
writes that one document, so of two admissions that read the same counts only one commits;
the other reads again, counting the first one's job. Jobs that end only lower the counts, so
they need not touch it. Not a transaction for the reason above: twenty admissions of one
owner in transactions all took the document's read lock and then deadlocked upgrading it
(the emulator aborted them all on its lock timeout, again and again until their deadline).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore import DocumentReference, DocumentSnapshot

from dal.errors import (
    IdempotencyKeyReused,
    InvalidCursor,
    JobNotFound,
    StoreUnavailable,
    TransitionConflict,
)
from dal.firestore.client import (
    BoundedTransaction,
    check_prefix,
    from_timestamp,
    hashed_id,
    is_valid_document_id,
    read_retry,
    required_timestamp,
    run_transaction,
    to_timestamp,
    translate_errors,
    write_retry,
)
from dal.paging import decode_cursor, encode_cursor
from dal.quota_rules import check_admission
from dal.records import (
    ENQUEUE_FAILED,
    TERMINAL_STATUSES,
    ImageRef,
    Job,
    JobChanges,
    JobError,
    JobParams,
    JobStatus,
    Page,
    WebhookDelivery,
    is_dead_lettered,
    legal_sources,
    utcnow,
)
from dal.requeue import handed_over_again, lease_lapsed, requeued_after_lapse
from dal.webhooks.state import has_succeeded, is_owed, webhook_event

STORE = "job store"
DEFAULT_TIMEOUT_S = 10.0
# Attempts of the create-with-idempotency-key transaction under contention before it gives up
# (StoreUnavailable), with a jittered pause between them (dal.firestore.client.run_transaction).
DEFAULT_MAX_ATTEMPTS = 10
# The pause before reading a job again after a conditional write lost to another writer:
# random up to FIRST, doubling each round up to MAX, so that writers of compatible changes
# (progress, a webhook delivery) do not collide again in lock step.
FIRST_CONFLICT_PAUSE_S = 0.01
MAX_CONFLICT_PAUSE_S = 0.5


class _ConflictRounds:
    """The rounds of one conditional write: a deadline every call of every round shares, and
    a jittered, doubling pause between rounds after a conflict."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s
        self._pause_s = FIRST_CONFLICT_PAUSE_S

    def left(self) -> float:
        return max(self._deadline - time.monotonic(), 0.001)

    def after_conflict(self, exc: Exception, kept_changing: str) -> None:
        """Pause before the next round; StoreUnavailable once the deadline has passed."""
        if time.monotonic() >= self._deadline:
            raise StoreUnavailable(
                f"{STORE} unavailable: {kept_changing} for {self._timeout_s:g} s"
            ) from exc
        jitter = random.uniform(0, self._pause_s)  # noqa: S311  # nosec B311 - not a secret
        time.sleep(min(self.left(), jitter))
        self._pause_s = min(MAX_CONFLICT_PAUSE_S, self._pause_s * 2)


# What a conditional change does with the current record at `now`: the new record (the same
# one when nothing is to be written), or an exception (TransitionConflict) to refuse.
Compute = Callable[[Job, datetime], Job]


class FirestoreJobStore:
    """A JobStore on Firestore; see the module docstring for the document layout."""

    def __init__(
        self,
        client: firestore.Client,
        *,
        collection_prefix: str = "",
        clock: Callable[[], datetime] = utcnow,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        prefix = check_prefix(collection_prefix)
        self._client = client
        self._jobs = client.collection(f"{prefix}jobs")
        self._idempotency_keys = client.collection(f"{prefix}idempotency_keys")
        self._admissions = client.collection(f"{prefix}owner_admissions")
        self._clock = clock
        self._timeout_s = timeout_s
        # Reads and single writes give up after timeout_s; the library's defaults wait minutes.
        self._retry = read_retry(timeout_s)
        self._max_attempts = max_attempts

    # ---- create / get ------------------------------------------------------------------------

    def create(self, job: Job) -> Job:
        if not is_valid_document_id(job.id):
            raise ValueError(f"job id {job.id!r} cannot be a Firestore document id")
        data = _to_doc(job)
        ref = self._jobs.document(job.id)
        with translate_errors(STORE, f"creating job {job.id!r}"):
            try:
                if job.idempotency_key is None:
                    ref.create(data, retry=self._retry, timeout=self._timeout_s)
                else:
                    key_ref = self._idempotency_keys.document(
                        hashed_id(job.owner, job.idempotency_key)
                    )
                    self._run(_create_with_key, ref, key_ref, job, data)
            except gexc.Conflict as exc:
                raise ValueError(f"job {job.id!r} already exists") from exc
        return job

    def create_within(
        self, job: Job, *, max_in_flight: int, images_per_day: int, day_start: datetime
    ) -> Job:
        """One conditional batch per round (see the module docstring): read the owner's
        admission document, then the job id, the idempotency key and the counts; commit the
        job, its key and the admission document together, on the precondition that the
        admission document is still the one read (and that the job and a fresh key do not
        exist). A round that loses to another writer reads again after a short random pause,
        until `timeout_s` has passed."""
        if not is_valid_document_id(job.id):
            raise ValueError(f"job id {job.id!r} cannot be a Firestore document id")
        ref = self._jobs.document(job.id)
        key_ref = (
            None
            if job.idempotency_key is None
            else self._idempotency_keys.document(hashed_id(job.owner, job.idempotency_key))
        )
        admission_ref = self._admissions.document(hashed_id(job.owner))
        data = _to_doc(job)
        rounds = _ConflictRounds(self._timeout_s)
        left = rounds.left

        def read(doc: DocumentReference) -> DocumentSnapshot:
            budget = left()
            snapshot: DocumentSnapshot = doc.get(
                retry=self._retry.with_timeout(budget), timeout=budget
            )
            return snapshot

        with translate_errors(STORE, f"admitting job {job.id!r}"):
            while True:
                # First: every admission this one could have missed in the counts below
                # changed this document after the read, so this round's commit fails.
                admission = read(admission_ref)
                # create's precedence: a duplicate id, a reused key, and only then the quotas.
                if read(ref).exists:
                    raise ValueError(f"job {job.id!r} already exists")
                key = None if key_ref is None else read(key_ref)
                if key is not None and key.exists:
                    existing = self._job_named_by(key, left())
                    if existing is not None:
                        raise IdempotencyKeyReused(existing)
                check_admission(
                    job,
                    max_in_flight=max_in_flight,
                    images_per_day=images_per_day,
                    day_start=day_start,
                    count_in_flight=lambda: self._count_in_flight(job.owner),
                    count_images_since=lambda since: self._count_images_since(job.owner, since),
                )
                batch = self._client.batch()
                batch.create(ref, data)
                if key_ref is not None and key is not None:
                    self._write_if_unchanged(batch, key_ref, key, _key_doc(job))
                self._write_if_unchanged(
                    batch,
                    admission_ref,
                    admission,
                    {
                        "owner": job.owner,
                        "job_id": job.id,
                        "admitted_at": to_timestamp(job.created_at),
                    },
                )
                budget = left()
                try:
                    batch.commit(retry=write_retry(budget), timeout=budget)
                except (gexc.FailedPrecondition, gexc.Conflict) as exc:
                    # Another admission, a create of the key, or of this id got in first; the
                    # next round reads which.
                    rounds.after_conflict(exc, f"the admissions of {job.owner!r} kept changing")
                    continue
                return job

    def _write_if_unchanged(
        self,
        batch: Any,
        ref: DocumentReference,
        read: DocumentSnapshot,
        data: dict[str, Any],
    ) -> None:
        """Add to `batch` a write of `data` that fails unless the document is as `read`
        found it: still absent (create), or last updated at the time read."""
        if not read.exists:
            batch.create(ref, data)
            return
        option = self._client.write_option(last_update_time=read.update_time)
        batch.update(ref, data, option=option)

    def _job_named_by(self, key: DocumentSnapshot, budget: float) -> Job | None:
        """The job an idempotency-key document names, if it still exists (else the key is
        free again, as in _create_with_key)."""
        existing_id = (key.to_dict() or {}).get("job_id")
        if not isinstance(existing_id, str) or not is_valid_document_id(existing_id):
            return None
        snapshot = self._jobs.document(existing_id).get(
            retry=self._retry.with_timeout(budget), timeout=budget
        )
        return _from_snapshot(snapshot) if snapshot.exists else None

    def get(self, job_id: str) -> Job:
        if not is_valid_document_id(job_id):
            raise JobNotFound(job_id)
        with translate_errors(STORE, f"reading job {job_id!r}"):
            snapshot = self._jobs.document(job_id).get(retry=self._retry, timeout=self._timeout_s)
        if not snapshot.exists:
            raise JobNotFound(job_id)
        return _from_snapshot(snapshot)

    # ---- listings ----------------------------------------------------------------------------

    def list_by_owner(self, owner: str, *, limit: int, cursor: str | None = None) -> Page:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        # Newest first by (created_at, id): the composite index (owner ASC, created_at DESC,
        # __name__ DESC) in firestore.indexes.json serves exactly this query.
        query = (
            self._jobs.where(filter=firestore.FieldFilter("owner", "==", owner))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .order_by("__name__", direction=firestore.Query.DESCENDING)
        )
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            if not is_valid_document_id(last_id):
                raise InvalidCursor("cursor is not one this service issued")
            query = query.start_after(
                {"created_at": created_at, "__name__": self._jobs.document(last_id)}
            )
        # One more than asked, to know whether there is a next page.
        query = query.limit(limit + 1)
        with translate_errors(STORE, f"listing the jobs of {owner!r}"):
            snapshots = query.get(retry=self._retry, timeout=self._timeout_s)
        found = [_from_snapshot(s) for s in snapshots]
        items = tuple(found[:limit])
        return Page(
            items=items, next_cursor=encode_cursor(items[-1]) if len(found) > limit else None
        )

    def list_by_status(self, status: JobStatus, *, limit: int) -> Sequence[Job]:
        if limit < 1:
            return []
        # Oldest first; ties by id, which the index (status ASC, created_at ASC) carries as
        # its implicit last field.
        query = (
            self._jobs.where(filter=firestore.FieldFilter("status", "==", status.value))
            .order_by("created_at", direction=firestore.Query.ASCENDING)
            .order_by("__name__", direction=firestore.Query.ASCENDING)
            .limit(limit)
        )
        with translate_errors(STORE, f"listing {status.value} jobs"):
            snapshots = query.get(retry=self._retry, timeout=self._timeout_s)
        return [_from_snapshot(s) for s in snapshots]

    # ---- conditional changes -----------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        *,
        expected: Collection[JobStatus],
        target: JobStatus,
        changes: JobChanges | None = None,
    ) -> Job:
        expected_set = legal_sources(expected, target)
        apply = changes or JobChanges()

        def compute(job: Job, now: datetime) -> Job:
            if job.status not in expected_set:
                raise TransitionConflict(job, expected_set)
            return apply.apply(job, target, now)

        return self._update(job_id, compute, f"moving job {job_id!r} to {target.value}")

    def claim(self, job_id: str, *, lease_s: float) -> Job:
        def compute(job: Job, now: datetime) -> Job:
            if job.status != JobStatus.QUEUED and not lease_lapsed(job, now):
                raise TransitionConflict(job, frozenset({JobStatus.QUEUED}))
            return job.with_changes(
                status=JobStatus.RUNNING,
                attempts=job.attempts + 1,
                started_at=job.started_at or now,
                lease_expires_at=now + timedelta(seconds=lease_s),
                updated_at=now,
            )

        return self._update(job_id, compute, f"claiming job {job_id!r}")

    def release(self, job_id: str, *, error: JobError) -> Job:
        return self.transition(
            job_id,
            expected={JobStatus.RUNNING},
            target=JobStatus.QUEUED,
            changes=JobChanges(error=error),
        )

    def requeue_lapsed(self, job_id: str, *, error: JobError, at: datetime) -> Job:
        def compute(job: Job, now: datetime) -> Job:
            return requeued_after_lapse(job, error=error, at=at, now=now)

        return self._update(job_id, compute, f"requeueing job {job_id!r} after its lease")

    def requeue_unclaimed(self, job_id: str, *, enqueued_before: datetime, at: datetime) -> Job:
        def compute(job: Job, now: datetime) -> Job:
            return handed_over_again(job, enqueued_before=enqueued_before, at=at, now=now)

        return self._update(job_id, compute, f"handing job {job_id!r} over again")

    def reopen_dead_lettered(self, job_id: str) -> Job:
        def compute(job: Job, now: datetime) -> Job:
            if not is_dead_lettered(job):
                raise TransitionConflict(job, frozenset({JobStatus.FAILED}))
            return job.with_changes(
                status=JobStatus.QUEUED,
                error=None,
                progress=0.0,
                finished_at=None,
                lease_expires_at=None,
                updated_at=now,
            )

        return self._update(job_id, compute, f"reopening job {job_id!r}")

    def record_progress(self, job_id: str, progress: float, *, lease_s: float | None = None) -> Job:
        def compute(job: Job, now: datetime) -> Job:
            if job.status != JobStatus.RUNNING:
                return job
            lease = job.lease_expires_at if lease_s is None else now + timedelta(seconds=lease_s)
            return job.with_changes(progress=progress, updated_at=now, lease_expires_at=lease)

        return self._update(job_id, compute, f"recording progress of job {job_id!r}")

    def record_webhook_delivery(self, job_id: str, delivery: WebhookDelivery) -> Job:
        def compute(job: Job, now: datetime) -> Job:
            if has_succeeded(job, delivery.event):
                return job
            return job.with_changes(webhook_deliveries=(*job.webhook_deliveries, delivery))

        return self._update(job_id, compute, f"recording a webhook delivery of job {job_id!r}")

    def list_owed_webhooks(
        self, *, since: datetime, max_attempts: int, limit: int
    ) -> Sequence[Job]:
        if limit < 1:
            return []
        # One query per finished status on the index (status, webhook_delivered, created_at):
        # jobs without a webhook or with a success are never read. Attempts used up (a
        # setting) are decided here; jobs written before the field existed never match.
        owed: list[Job] = []
        for status in sorted(TERMINAL_STATUSES):
            query = (
                self._jobs.where(filter=firestore.FieldFilter("status", "==", status.value))
                .where(filter=firestore.FieldFilter("webhook_delivered", "==", False))
                .where(filter=firestore.FieldFilter("created_at", ">=", to_timestamp(since)))
                .order_by("created_at", direction=firestore.Query.ASCENDING)
                .order_by("__name__", direction=firestore.Query.ASCENDING)
            )
            with translate_errors(STORE, f"listing {status.value} jobs owing a webhook"):
                for snapshot in query.stream(retry=self._retry, timeout=self._timeout_s):
                    job = _from_snapshot(snapshot)
                    if is_owed(job, max_attempts=max_attempts):
                        owed.append(job)
        owed.sort(key=lambda j: (j.created_at, j.id))
        return owed[:limit]

    def ping(self) -> None:
        with translate_errors(STORE, "a ping"):
            # No retry: a health check should answer now.
            self._jobs.limit(1).get(retry=None, timeout=self._timeout_s)

    # ---- quotas and the outbox ---------------------------------------------------------------

    def count_in_flight(self, owner: str) -> int:
        with translate_errors(STORE, f"counting the jobs in flight of {owner!r}"):
            return self._count_in_flight(owner)

    def count_images_since(self, owner: str, since: datetime) -> int:
        with translate_errors(STORE, f"counting the images of {owner!r}"):
            return self._count_images_since(owner, since)

    def _count_in_flight(self, owner: str) -> int:
        # A count aggregation: billed per 1000 index entries, no documents read.
        query = self._jobs.where(filter=firestore.FieldFilter("owner", "==", owner)).where(
            filter=firestore.FieldFilter(
                "status", "in", [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
            )
        )
        return _aggregate(query.count(alias="n"), self._retry, self._timeout_s)

    def _count_images_since(self, owner: str, since: datetime) -> int:
        # Sum aggregations over the top-level num_images (params is exempt from indexing):
        # the day's jobs, minus those that failed enqueue_failed. Each has a composite index
        # in firestore.indexes.json. Jobs written before num_images existed count 0.
        mine = self._jobs.where(filter=firestore.FieldFilter("owner", "==", owner))
        since_ts = to_timestamp(since)
        everything = mine.where(filter=firestore.FieldFilter("created_at", ">=", since_ts))
        never_queued = mine.where(
            filter=firestore.FieldFilter("error.code", "==", ENQUEUE_FAILED)
        ).where(filter=firestore.FieldFilter("created_at", ">=", since_ts))
        total = _aggregate(everything.sum("num_images", alias="n"), self._retry, self._timeout_s)
        refunded = _aggregate(
            never_queued.sum("num_images", alias="n"), self._retry, self._timeout_s
        )
        return total - refunded

    def mark_enqueued(self, job_id: str, *, at: datetime) -> Job:
        def compute(job: Job, now: datetime) -> Job:
            if job.enqueued_at is not None:
                return job  # the first mark wins
            return job.with_changes(enqueued_at=at)

        return self._update(job_id, compute, f"marking job {job_id!r} enqueued")

    def list_unenqueued(self, *, created_before: datetime, limit: int) -> Sequence[Job]:
        if limit < 1:
            return []
        # Index (status, enqueued_at, created_at); a null filter matches only documents that
        # hold enqueued_at = null, so jobs written before the field existed never match.
        query = (
            self._jobs.where(filter=firestore.FieldFilter("status", "==", JobStatus.QUEUED.value))
            .where(filter=firestore.FieldFilter("enqueued_at", "==", None))
            .where(filter=firestore.FieldFilter("created_at", "<", to_timestamp(created_before)))
            .order_by("created_at", direction=firestore.Query.ASCENDING)
            .order_by("__name__", direction=firestore.Query.ASCENDING)
            .limit(limit)
        )
        with translate_errors(STORE, "listing unpublished jobs"):
            snapshots = query.get(retry=self._retry, timeout=self._timeout_s)
        return [_from_snapshot(s) for s in snapshots]

    # ---- helpers -----------------------------------------------------------------------------

    def _update(self, job_id: str, compute: Compute, what: str) -> Job:
        """Apply `compute` to the job as one conditional write (see the module docstring):
        read, compute, write the changed fields if the job's update time is still the one
        read; else read again, after a short random pause, until `timeout_s` has passed."""
        if not is_valid_document_id(job_id):
            raise JobNotFound(job_id)
        ref = self._jobs.document(job_id)
        rounds = _ConflictRounds(self._timeout_s)
        left = rounds.left
        with translate_errors(STORE, what):
            while True:
                budget = left()
                snapshot = ref.get(retry=self._retry.with_timeout(budget), timeout=budget)
                if not snapshot.exists:
                    raise JobNotFound(job_id)
                current = _from_snapshot(snapshot)
                updated = compute(current, self._clock())  # may refuse: TransitionConflict
                before = _to_doc(current)
                changed = {k: v for k, v in _to_doc(updated).items() if before[k] != v}
                if not changed:
                    return updated
                budget = left()
                try:
                    ref.update(
                        changed,
                        option=self._client.write_option(last_update_time=snapshot.update_time),
                        retry=write_retry(budget),
                        timeout=budget,
                    )
                except gexc.FailedPrecondition as exc:
                    # Written (or deleted) by someone else since our read.
                    rounds.after_conflict(exc, f"job {job_id!r} kept changing under {what}")
                    continue
                return updated

    def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return run_transaction(
            self._client,
            function,
            *args,
            max_attempts=self._max_attempts,
            deadline_s=self._timeout_s,
        )


def _aggregate(query: Any, retry: Any, timeout_s: float) -> int:
    """The single value of a one-aggregation query (a sum over nothing is 0)."""
    results = query.get(retry=retry, timeout=timeout_s)
    value = results[0][0].value if results and results[0] else 0
    return int(value or 0)


# ---- transaction body (re-run from the top on each retry; no side effects but writes) -------


def _create_with_key(
    transaction: BoundedTransaction,
    ref: DocumentReference,
    key_ref: DocumentReference,
    job: Job,
    data: dict[str, Any],
) -> None:
    if transaction.get_document(ref).exists:
        # A duplicate id wins over a reused key, as in the other stores.
        raise ValueError(f"job {job.id!r} already exists")
    key = transaction.get_document(key_ref)
    if key.exists:
        existing_id = (key.to_dict() or {}).get("job_id")
        if isinstance(existing_id, str) and is_valid_document_id(existing_id):
            existing = transaction.get_document(ref.parent.document(existing_id))
            if existing.exists:
                raise IdempotencyKeyReused(_from_snapshot(existing))
        # The job it named is gone: the key is free again.
    transaction.create(ref, data)
    transaction.set(key_ref, _key_doc(job))


def _key_doc(job: Job) -> dict[str, Any]:
    return {
        "owner": job.owner,
        "idempotency_key": job.idempotency_key,
        "job_id": job.id,
        "created_at": to_timestamp(job.created_at),
    }


# ---- documents ---------------------------------------------------------------------------------


def _to_doc(job: Job) -> dict[str, Any]:
    return {
        "owner": job.owner,
        "model": job.model,
        "status": job.status.value,
        "progress": float(job.progress),
        "attempts": int(job.attempts),
        "params": job.params.to_dict(),
        "error": job.error.to_dict() if job.error is not None else None,
        "images": [image.to_dict() for image in job.images],
        "idempotency_key": job.idempotency_key,
        "request_fingerprint": job.request_fingerprint,
        "created_at": to_timestamp(job.created_at),
        "updated_at": to_timestamp(job.updated_at),
        "started_at": to_timestamp(job.started_at),
        "finished_at": to_timestamp(job.finished_at),
        "lease_expires_at": to_timestamp(job.lease_expires_at),
        "enqueued_at": to_timestamp(job.enqueued_at),
        "handovers": int(job.handovers),
        # Top level for the daily image quota's sum aggregation (params is not indexed).
        "num_images": int(job.params.num_images),
        "webhook_url": job.webhook_url,
        "webhook_deliveries": [d.to_dict() for d in job.webhook_deliveries],
        # Top level for the webhook redrive's query: false while a webhook may still be owed.
        "webhook_delivered": _webhook_delivered(job),
    }


def _webhook_delivered(job: Job) -> bool:
    event = webhook_event(job)
    return job.webhook_url is None or (event is not None and has_succeeded(job, event))


def _from_snapshot(snapshot: DocumentSnapshot) -> Job:
    data = snapshot.to_dict() or {}
    error = data.get("error")
    return Job(
        id=snapshot.id,
        owner=data["owner"],
        model=data["model"],
        status=JobStatus(data["status"]),
        progress=float(data.get("progress") or 0.0),
        attempts=int(data.get("attempts") or 0),
        params=JobParams.from_dict(data["params"]),
        error=JobError.from_dict(error) if error else None,
        images=tuple(ImageRef.from_dict(i) for i in data.get("images") or ()),
        idempotency_key=data.get("idempotency_key"),
        request_fingerprint=data.get("request_fingerprint"),
        created_at=required_timestamp(data["created_at"]),
        updated_at=required_timestamp(data["updated_at"]),
        started_at=from_timestamp(data.get("started_at")),
        finished_at=from_timestamp(data.get("finished_at")),
        lease_expires_at=from_timestamp(data.get("lease_expires_at")),
        enqueued_at=from_timestamp(data.get("enqueued_at")),
        handovers=int(data.get("handovers") or 0),
        webhook_url=data.get("webhook_url"),
        webhook_deliveries=tuple(
            WebhookDelivery.from_dict(d) for d in data.get("webhook_deliveries") or ()
        ),
    )
