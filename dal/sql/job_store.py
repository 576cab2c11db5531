from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, not_, or_, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import InterfaceError as SaInterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from dal.errors import IdempotencyKeyReused, JobNotFound, StoreUnavailable, TransitionConflict
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
from dal.sql.engine import write_lock
from dal.sql.schema import jobs
from dal.webhooks.state import has_succeeded, is_owed


class SqlJobStore:
    """JobStore on SQLAlchemy Core. Conditional transitions are single UPDATE ... WHERE status
    IN (...) statements, so the database decides which of several concurrent claimers wins."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self._clock = clock

    def create(self, job: Job) -> Job:
        try:
            with self._begin() as conn:
                conn.execute(insert(jobs).values(**_to_row(job)))
        except IntegrityError as exc:
            raise self._duplicate(job) from exc
        return job

    def create_within(
        self, job: Job, *, max_in_flight: int, images_per_day: int, day_start: datetime
    ) -> Job:
        """One transaction that holds the owner's admission lock over the counts and the
        insert (see _begin_admission), so two admissions of one owner never read the same
        counts, whichever processes they run in."""
        try:
            with self._begin_admission(job.owner) as conn:
                # The same precedence as create's: a duplicate id, then a reused key, and
                # only then the quotas (a replay creates nothing, so it is not charged).
                self._refuse_duplicate(conn, job)
                check_admission(
                    job,
                    max_in_flight=max_in_flight,
                    images_per_day=images_per_day,
                    day_start=day_start,
                    count_in_flight=lambda: _count_in_flight(conn, job.owner),
                    count_images_since=lambda since: _count_images_since(conn, job.owner, since),
                )
                conn.execute(insert(jobs).values(**_to_row(job)))
        except IntegrityError as exc:
            # A create() of the same id or key, which takes no admission lock, got in first.
            raise self._duplicate(job) from exc
        return job

    def _refuse_duplicate(self, conn: Connection, job: Job) -> None:
        if conn.execute(select(jobs.c.id).where(jobs.c.id == job.id)).first() is not None:
            raise ValueError(f"job {job.id!r} already exists")
        if job.idempotency_key is not None:
            query = select(jobs).where(
                jobs.c.owner == job.owner, jobs.c.idempotency_key == job.idempotency_key
            )
            row = conn.execute(query).mappings().first()
            if row is not None:
                raise IdempotencyKeyReused(_from_row(row))

    def _duplicate(self, job: Job) -> Exception:
        """What an insert refused by a unique constraint means. A duplicate id wins over a
        reused key, as in MemoryJobStore: inserting the same record twice is a ValueError
        whatever its idempotency key."""
        if job.idempotency_key is not None and not self._exists(job.id):
            existing = self._find_by_idempotency_key(job.owner, job.idempotency_key)
            if existing is not None:
                return IdempotencyKeyReused(existing)
        return ValueError(f"job {job.id!r} already exists")

    def get(self, job_id: str) -> Job:
        with self._connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return _from_row(row)

    def list_by_owner(self, owner: str, *, limit: int, cursor: str | None = None) -> Page:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = select(jobs).where(jobs.c.owner == owner)
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    jobs.c.created_at < created_at,
                    and_(jobs.c.created_at == created_at, jobs.c.id < last_id),
                )
            )
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
        with self._connect() as conn:
            rows = conn.execute(query).mappings().all()
        found = [_from_row(r) for r in rows]
        items = tuple(found[:limit])
        return Page(
            items=items, next_cursor=encode_cursor(items[-1]) if len(found) > limit else None
        )

    def list_by_status(self, status: JobStatus, *, limit: int) -> Sequence[Job]:
        query = (
            select(jobs)
            .where(jobs.c.status == status.value)
            .order_by(jobs.c.created_at, jobs.c.id)
            .limit(limit)
        )
        with self._connect() as conn:
            return [_from_row(r) for r in conn.execute(query).mappings().all()]

    def transition(
        self,
        job_id: str,
        *,
        expected: Collection[JobStatus],
        target: JobStatus,
        changes: JobChanges | None = None,
    ) -> Job:
        expected_set = legal_sources(expected, target)
        changes = changes or JobChanges()
        values: dict[str, Any] = {"status": target.value, "updated_at": self._clock()}
        if changes.progress is not None:
            values["progress"] = changes.progress
        if changes.started_at is not None:
            values["started_at"] = changes.started_at
        if changes.finished_at is not None:
            values["finished_at"] = changes.finished_at
        if changes.error is not None:
            values["error"] = changes.error.to_dict()
        elif changes.clear_error:
            values["error"] = None
        if target != JobStatus.RUNNING:
            values["lease_expires_at"] = None
        if changes.images is not None:
            values["images"] = [i.to_dict() for i in changes.images]
        if changes.increment_attempts:
            values["attempts"] = jobs.c.attempts + 1
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status.in_([s.value for s in expected_set]))
            .values(**values)
        )
        return self._conditional(job_id, statement, expected_set)

    def claim(self, job_id: str, *, lease_s: float) -> Job:
        now = self._clock()
        statement = (
            update(jobs)
            .where(
                jobs.c.id == job_id,
                or_(
                    jobs.c.status == JobStatus.QUEUED.value,
                    and_(
                        jobs.c.status == JobStatus.RUNNING.value,
                        jobs.c.lease_expires_at <= now,
                    ),
                ),
            )
            .values(
                status=JobStatus.RUNNING.value,
                attempts=jobs.c.attempts + 1,
                started_at=func.coalesce(jobs.c.started_at, now),
                lease_expires_at=now + timedelta(seconds=lease_s),
                updated_at=now,
            )
        )
        return self._conditional(job_id, statement, frozenset({JobStatus.QUEUED}))

    def release(self, job_id: str, *, error: JobError) -> Job:
        return self.transition(
            job_id,
            expected={JobStatus.RUNNING},
            target=JobStatus.QUEUED,
            changes=JobChanges(error=error),
        )

    def requeue_lapsed(self, job_id: str, *, error: JobError, at: datetime) -> Job:
        now = self._clock()
        statement = (
            update(jobs)
            .where(
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.RUNNING.value,
                jobs.c.lease_expires_at <= now,
            )
            .values(
                status=JobStatus.QUEUED.value,
                lease_expires_at=None,
                error=error.to_dict(),
                enqueued_at=at,
                handovers=jobs.c.handovers + 1,
                updated_at=now,
            )
        )
        return self._conditional(job_id, statement, frozenset({JobStatus.RUNNING}))

    def requeue_unclaimed(self, job_id: str, *, enqueued_before: datetime, at: datetime) -> Job:
        statement = (
            update(jobs)
            .where(
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.QUEUED.value,
                jobs.c.enqueued_at <= enqueued_before,
            )
            .values(enqueued_at=at, handovers=jobs.c.handovers + 1, updated_at=self._clock())
        )
        return self._conditional(job_id, statement, frozenset({JobStatus.QUEUED}))

    def reopen_dead_lettered(self, job_id: str) -> Job:
        current = self.get(job_id)
        if not is_dead_lettered(current):
            raise TransitionConflict(current, frozenset({JobStatus.FAILED}))
        # Nothing else moves a job out of `failed`, so the status condition alone makes
        # concurrent replays of the same job reopen it once.
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.FAILED.value)
            .values(
                status=JobStatus.QUEUED.value,
                error=None,
                progress=0.0,
                finished_at=None,
                lease_expires_at=None,
                updated_at=self._clock(),
            )
        )
        return self._conditional(job_id, statement, frozenset({JobStatus.FAILED}))

    def _conditional(self, job_id: str, statement: Any, expected: frozenset[JobStatus]) -> Job:
        with self._begin() as conn:
            result = conn.execute(statement)
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        job = _from_row(row)
        if result.rowcount != 1:
            raise TransitionConflict(job, expected)
        return job

    def record_progress(self, job_id: str, progress: float, *, lease_s: float | None = None) -> Job:
        now = self._clock()
        values: dict[str, Any] = {"progress": progress, "updated_at": now}
        if lease_s is not None:
            values["lease_expires_at"] = now + timedelta(seconds=lease_s)
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value)
            .values(**values)
        )
        with self._begin() as conn:
            conn.execute(statement)
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return _from_row(row)

    def record_webhook_delivery(self, job_id: str, delivery: WebhookDelivery) -> Job:
        # Read and append under a row lock (PostgreSQL; SQLite writes are serialised anyway),
        # so concurrent appends neither lose an attempt nor record a second success.
        with self._begin() as conn:
            query = select(jobs).where(jobs.c.id == job_id).with_for_update()
            row = conn.execute(query).mappings().first()
            if row is None:
                raise JobNotFound(job_id)
            job = _from_row(row)
            if has_succeeded(job, delivery.event):
                return job
            job = job.with_changes(webhook_deliveries=(*job.webhook_deliveries, delivery))
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(webhook_deliveries=[d.to_dict() for d in job.webhook_deliveries])
            )
        return job

    def list_owed_webhooks(
        self, *, since: datetime, max_attempts: int, limit: int
    ) -> Sequence[Job]:
        if limit < 1:
            return []
        # The (status, created_at) index bounds the scan to the window; whether a delivery is
        # still owed lives in the JSON list, so it is decided here.
        query = (
            select(jobs)
            .where(
                jobs.c.status.in_([s.value for s in TERMINAL_STATUSES]),
                jobs.c.created_at >= since,
                jobs.c.webhook_url.is_not(None),
            )
            .order_by(jobs.c.created_at, jobs.c.id)
        )
        owed: list[Job] = []
        with self._connect() as conn:
            for row in conn.execute(query).mappings():
                job = _from_row(row)
                if is_owed(job, max_attempts=max_attempts):
                    owed.append(job)
                    if len(owed) >= limit:
                        break
        return owed

    def ping(self) -> None:
        with self._connect() as conn:
            conn.execute(text("SELECT 1"))

    def count_in_flight(self, owner: str) -> int:
        with self._connect() as conn:
            return _count_in_flight(conn, owner)

    def count_images_since(self, owner: str, since: datetime) -> int:
        with self._connect() as conn:
            return _count_images_since(conn, owner, since)

    def mark_enqueued(self, job_id: str, *, at: datetime) -> Job:
        with self._begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.enqueued_at.is_(None))
                .values(enqueued_at=at)
            )
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return _from_row(row)

    def list_unenqueued(self, *, created_before: datetime, limit: int) -> Sequence[Job]:
        if limit < 1:
            return []
        query = (
            select(jobs)
            .where(
                jobs.c.status == JobStatus.QUEUED.value,
                jobs.c.enqueued_at.is_(None),
                jobs.c.created_at < created_before,
            )
            .order_by(jobs.c.created_at, jobs.c.id)
            .limit(limit)
        )
        with self._connect() as conn:
            return [_from_row(r) for r in conn.execute(query).mappings().all()]

    def _exists(self, job_id: str) -> bool:
        with self._connect() as conn:
            return conn.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first() is not None

    def _find_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        query = select(jobs).where(jobs.c.owner == owner, jobs.c.idempotency_key == key)
        with self._connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _from_row(row)

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                yield conn
        except (OperationalError, SaInterfaceError) as exc:
            raise StoreUnavailable(f"job store unavailable: {exc.orig}") from exc
        except PoolTimeout as exc:  # every pooled connection busy for pool_timeout seconds
            raise StoreUnavailable(f"job store unavailable: {exc}") from exc

    @contextmanager
    def _begin_admission(self, owner: str) -> Iterator[Connection]:
        """A write transaction in which no other admission of `owner` runs until it ends.

        PostgreSQL: a transaction-scoped advisory lock on a 64-bit hash of the owner, taken
        before anything is read. Under READ COMMITTED (the default, which this engine keeps)
        each later statement reads a fresh snapshot, so the counts include every admission
        that committed before the lock was granted. Owners whose hashes collide only wait for
        each other.

        SQLite: BEGIN IMMEDIATE takes the database's write lock before the counts, across
        processes (pysqlite would otherwise begin only at the INSERT, leaving the counts
        outside the transaction); write_lock queues this process's writers first, as _begin
        does. Another process's writer waits in the busy handler (SQLITE_BUSY_TIMEOUT_S)."""
        with self._begin() as conn:
            dialect = conn.dialect.name
            if dialect == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _admission_key(owner)}
                )
            elif dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with write_lock(self._engine), self._engine.begin() as conn:
                yield conn
        except (OperationalError, SaInterfaceError) as exc:
            raise StoreUnavailable(f"job store unavailable: {exc.orig}") from exc
        except PoolTimeout as exc:  # every pooled connection busy for pool_timeout seconds
            raise StoreUnavailable(f"job store unavailable: {exc}") from exc


def _count_in_flight(conn: Connection, owner: str) -> int:
    query = (
        select(func.count())
        .select_from(jobs)
        .where(
            jobs.c.owner == owner,
            jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
        )
    )
    return int(conn.execute(query).scalar_one())


def _count_images_since(conn: Connection, owner: str, since: datetime) -> int:
    # Served by ix_jobs_owner_created; the JSON paths work on SQLite and PostgreSQL alike.
    enqueue_failed = and_(
        jobs.c.status == JobStatus.FAILED.value,
        func.coalesce(jobs.c.error["code"].as_string(), "") == ENQUEUE_FAILED,
    )
    query = select(
        func.coalesce(func.sum(func.coalesce(jobs.c.params["num_images"].as_integer(), 1)), 0)
    ).where(jobs.c.owner == owner, jobs.c.created_at >= since, not_(enqueue_failed))
    return int(conn.execute(query).scalar_one())


def _admission_key(owner: str) -> int:
    """The owner's advisory-lock key: a signed 64-bit hash (PostgreSQL's bigint), under a
    namespace of its own so it stays clear of the migration lock's key."""
    digest = hashlib.sha256(b"txt2img-job-admission\0" + owner.encode("utf-8", "surrogatepass"))
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


def _to_row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "owner": job.owner,
        "model": job.model,
        "status": job.status.value,
        "progress": job.progress,
        "attempts": job.attempts,
        "params": job.params.to_dict(),
        "error": job.error.to_dict() if job.error else None,
        "images": [i.to_dict() for i in job.images],
        "idempotency_key": job.idempotency_key,
        "request_fingerprint": job.request_fingerprint,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "lease_expires_at": job.lease_expires_at,
        "enqueued_at": job.enqueued_at,
        "handovers": job.handovers,
        "webhook_url": job.webhook_url,
        "webhook_deliveries": [d.to_dict() for d in job.webhook_deliveries],
    }


def _from_row(row: Any) -> Job:
    return Job(
        id=row["id"],
        owner=row["owner"],
        model=row["model"],
        status=JobStatus(row["status"]),
        progress=float(row["progress"]),
        attempts=int(row["attempts"]),
        params=JobParams.from_dict(row["params"]),
        error=JobError.from_dict(row["error"]) if row["error"] else None,
        images=tuple(ImageRef.from_dict(i) for i in row["images"] or ()),
        idempotency_key=row["idempotency_key"],
        request_fingerprint=row["request_fingerprint"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        lease_expires_at=row["lease_expires_at"],
        enqueued_at=row["enqueued_at"],
        handovers=int(row["handovers"]),
        webhook_url=row["webhook_url"],
        webhook_deliveries=tuple(
            WebhookDelivery.from_dict(d) for d in row["webhook_deliveries"] or ()
        ),
    )
