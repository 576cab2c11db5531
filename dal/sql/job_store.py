from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Integer,
    Update,
    and_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import InterfaceError as SaInterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from dal.errors import IdempotencyKeyReused, JobNotFound, StoreUnavailable, TransitionConflict
from dal.paging import decode_cursor, encode_cursor
from dal.quota_rules import check_admission
from dal.records import (
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
from dal.sql.sqlite_direct import DirectSqlite
from dal.sql.statements import SqlAlchemyStatements, Statements
from dal.webhooks.state import has_succeeded, is_owed

# Every statement is built once, here, with bindparam() placeholders, and executed with a
# parameters dict. A statement built per call cost several times what SQLite itself spends on
# it: SQLAlchemy coerced each literal into a bind parameter and generated the statement's cache
# key on every call. A reused statement keeps its cache key, and its compiled form comes from
# the engine's compiled cache.
#
# Placeholders that feed a column (SET, or a function argument) are typed as that column, so
# that its type's conversions (UtcDateTime, JSON) apply to the value; in a comparison with a
# column, SQLAlchemy gives the placeholder the column's type itself. In an UPDATE, a parameter
# named after a column sets that column: _RECORD_PROGRESS and _transition_statement take their
# SET list that way, and no placeholder of an UPDATE is named after a column.


def _status_in(statuses: Collection[JobStatus]) -> ColumnElement[bool]:
    """status IN (...) over a fixed set of statuses, one bound value each. A list of plain
    values would make an "expanding" IN, whose SQL SQLAlchemy rewrites on every execution:
    about a third of a prebuilt UPDATE's CPU on SQLite."""
    return jobs.c.status.in_([literal(s.value, jobs.c.status.type) for s in sorted(statuses)])


_BY_ID = jobs.c.id == bindparam("job_id")
_IN_FLIGHT = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})

_INSERT = insert(jobs)  # executed with _to_row's dict: its keys name the columns
_SELECT = select(jobs).where(_BY_ID)
_SELECT_FOR_UPDATE = _SELECT.with_for_update()
_SELECT_ID = select(jobs.c.id).where(_BY_ID)
_SELECT_BY_IDEMPOTENCY_KEY = select(jobs).where(
    jobs.c.owner == bindparam("owner"), jobs.c.idempotency_key == bindparam("idempotency_key")
)

_NEWEST_FIRST = (jobs.c.created_at.desc(), jobs.c.id.desc())
_LIST_BY_OWNER = (
    select(jobs)
    .where(jobs.c.owner == bindparam("owner"))
    .order_by(*_NEWEST_FIRST)
    .limit(bindparam("limit", type_=Integer))
)
# The next page: the jobs after the cursor's (created_at, id) in the same order.
_LIST_BY_OWNER_AFTER = (
    select(jobs)
    .where(
        jobs.c.owner == bindparam("owner"),
        or_(
            jobs.c.created_at < bindparam("after_created_at"),
            and_(
                jobs.c.created_at == bindparam("after_created_at"),
                jobs.c.id < bindparam("after_id"),
            ),
        ),
    )
    .order_by(*_NEWEST_FIRST)
    .limit(bindparam("limit", type_=Integer))
)
_LIST_BY_STATUS = (
    select(jobs)
    .where(jobs.c.status == bindparam("wanted_status"))
    .order_by(jobs.c.created_at, jobs.c.id)
    .limit(bindparam("limit", type_=Integer))
)
_LIST_FINISHED_WITH_WEBHOOK = (
    select(jobs)
    .where(
        _status_in(TERMINAL_STATUSES),
        jobs.c.created_at >= bindparam("since"),
        jobs.c.webhook_url.is_not(None),
    )
    .order_by(jobs.c.created_at, jobs.c.id)
)
_LIST_UNENQUEUED = (
    select(jobs)
    .where(
        jobs.c.status == JobStatus.QUEUED.value,
        jobs.c.enqueued_at.is_(None),
        jobs.c.created_at < bindparam("created_before"),
    )
    .order_by(jobs.c.created_at, jobs.c.id)
    .limit(bindparam("limit", type_=Integer))
)

_COUNT_IN_FLIGHT = (
    select(func.count())
    .select_from(jobs)
    .where(jobs.c.owner == bindparam("owner"), _status_in(_IN_FLIGHT))
)
# Read from ix_jobs_owner_created_charged alone, no table row and no JSON (PostgreSQL: an Index
# Only Scan; SQLite: a search of the index whose table seek is deferred and never needed, see
# tests/integration/test_sql_charged_images.py): charged_images is the generated column that
# holds what each job counts, num_images or 0 for a job failed with enqueue_failed (see
# dal/sql/schema.py). It runs in every admission under a daily images quota, inside the
# admission lock (SQLite's write lock).
_COUNT_IMAGES_SINCE = select(func.coalesce(func.sum(jobs.c.charged_images), 0)).where(
    jobs.c.owner == bindparam("owner"), jobs.c.created_at >= bindparam("since")
)

_CLAIM = (
    update(jobs)
    .where(
        _BY_ID,
        or_(
            jobs.c.status == JobStatus.QUEUED.value,
            and_(
                jobs.c.status == JobStatus.RUNNING.value,
                jobs.c.lease_expires_at <= bindparam("now"),
            ),
        ),
    )
    .values(
        status=JobStatus.RUNNING.value,
        attempts=jobs.c.attempts + 1,
        started_at=func.coalesce(jobs.c.started_at, bindparam("now", type_=jobs.c.started_at.type)),
        lease_expires_at=bindparam("lease_until", type_=jobs.c.lease_expires_at.type),
        updated_at=bindparam("now", type_=jobs.c.updated_at.type),
    )
    .returning(jobs)
)
# SET comes from the parameters' keys: progress, updated_at, and lease_expires_at with a lease.
_RECORD_PROGRESS = (
    update(jobs).where(_BY_ID, jobs.c.status == JobStatus.RUNNING.value).returning(jobs)
)
_MARK_ENQUEUED = (
    update(jobs)
    .where(_BY_ID, jobs.c.enqueued_at.is_(None))
    .values(enqueued_at=bindparam("at", type_=jobs.c.enqueued_at.type))
    .returning(jobs)
)
_REQUEUE_LAPSED = (
    update(jobs)
    .where(
        _BY_ID,
        jobs.c.status == JobStatus.RUNNING.value,
        jobs.c.lease_expires_at <= bindparam("now"),
    )
    .values(
        status=JobStatus.QUEUED.value,
        lease_expires_at=None,
        error=bindparam("new_error", type_=jobs.c.error.type),
        enqueued_at=bindparam("at", type_=jobs.c.enqueued_at.type),
        handovers=jobs.c.handovers + 1,
        updated_at=bindparam("now", type_=jobs.c.updated_at.type),
    )
    .returning(jobs)
)
_REQUEUE_UNCLAIMED = (
    update(jobs)
    .where(
        _BY_ID,
        jobs.c.status == JobStatus.QUEUED.value,
        jobs.c.enqueued_at <= bindparam("enqueued_before"),
    )
    .values(
        enqueued_at=bindparam("at", type_=jobs.c.enqueued_at.type),
        handovers=jobs.c.handovers + 1,
        updated_at=bindparam("now", type_=jobs.c.updated_at.type),
    )
    .returning(jobs)
)
# Nothing else moves a job out of `failed`, so the status condition alone makes concurrent
# replays of the same job reopen it once.
_REOPEN_FAILED = (
    update(jobs)
    .where(_BY_ID, jobs.c.status == JobStatus.FAILED.value)
    .values(
        status=JobStatus.QUEUED.value,
        error=None,
        progress=0.0,
        finished_at=None,
        lease_expires_at=None,
        updated_at=bindparam("now", type_=jobs.c.updated_at.type),
    )
    .returning(jobs)
)
_SET_WEBHOOK_DELIVERIES = (
    update(jobs)
    .where(_BY_ID)
    .values(webhook_deliveries=bindparam("deliveries", type_=jobs.c.webhook_deliveries.type))
)

_PING = text("SELECT 1")
_ADMISSION_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


@functools.cache
def _transition_statement(expected: frozenset[JobStatus], increment_attempts: bool) -> Update:
    """UPDATE jobs ... WHERE id = :job_id AND status IN (expected), built once per shape: only
    queued and running jobs move, so there are a handful. SET comes from the parameters' keys,
    which name the columns that change; the engine compiles each set of keys once."""
    statement = update(jobs).where(_BY_ID, _status_in(expected))
    if increment_attempts:
        statement = statement.values(attempts=jobs.c.attempts + 1)
    return statement.returning(jobs)


class SqlJobStore:
    """JobStore on SQLAlchemy Core. Conditional transitions are single UPDATE ... WHERE status
    IN (...) statements, so the database decides which of several concurrent claimers wins.

    On SQLite the same statements run on the pooled sqlite3 connection directly
    (dal/sql/sqlite_direct.py); elsewhere through SQLAlchemy's Connection."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self._clock = clock
        self._direct = DirectSqlite(engine) if engine.dialect.name == "sqlite" else None

    def create(self, job: Job) -> Job:
        try:
            with self._begin() as conn:
                conn.run(_INSERT, _to_row(job))
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
                conn.run(_INSERT, _to_row(job))
        except IntegrityError as exc:
            # A create() of the same id or key, which takes no admission lock, got in first.
            raise self._duplicate(job) from exc
        return job

    def _refuse_duplicate(self, conn: Statements, job: Job) -> None:
        if conn.first(_SELECT_ID, {"job_id": job.id}) is not None:
            raise ValueError(f"job {job.id!r} already exists")
        if job.idempotency_key is not None:
            key = {"owner": job.owner, "idempotency_key": job.idempotency_key}
            row = conn.first(_SELECT_BY_IDEMPOTENCY_KEY, key)
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
            row = conn.first(_SELECT, {"job_id": job_id})
        if row is None:
            raise JobNotFound(job_id)
        return _from_row(row)

    def list_by_owner(self, owner: str, *, limit: int, cursor: str | None = None) -> Page:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = _LIST_BY_OWNER
        params: dict[str, Any] = {"owner": owner, "limit": limit + 1}
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            query = _LIST_BY_OWNER_AFTER
            params.update(after_created_at=created_at, after_id=last_id)
        with self._connect() as conn:
            rows = conn.all(query, params)
        found = [_from_row(r) for r in rows]
        items = tuple(found[:limit])
        return Page(
            items=items, next_cursor=encode_cursor(items[-1]) if len(found) > limit else None
        )

    def list_by_status(self, status: JobStatus, *, limit: int) -> Sequence[Job]:
        params = {"wanted_status": status.value, "limit": limit}
        with self._connect() as conn:
            return [_from_row(r) for r in conn.all(_LIST_BY_STATUS, params)]

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
        # job_id, and the columns to set, by name (see _transition_statement).
        values: dict[str, Any] = {
            "job_id": job_id,
            "status": target.value,
            "updated_at": self._clock(),
        }
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
        statement = _transition_statement(expected_set, changes.increment_attempts)
        return self._conditional(job_id, statement, values, expected_set)

    def claim(self, job_id: str, *, lease_s: float) -> Job:
        now = self._clock()
        params = {"job_id": job_id, "now": now, "lease_until": now + timedelta(seconds=lease_s)}
        return self._conditional(job_id, _CLAIM, params, frozenset({JobStatus.QUEUED}))

    def release(self, job_id: str, *, error: JobError) -> Job:
        return self.transition(
            job_id,
            expected={JobStatus.RUNNING},
            target=JobStatus.QUEUED,
            changes=JobChanges(error=error),
        )

    def requeue_lapsed(self, job_id: str, *, error: JobError, at: datetime) -> Job:
        params = {"job_id": job_id, "now": self._clock(), "new_error": error.to_dict(), "at": at}
        return self._conditional(job_id, _REQUEUE_LAPSED, params, frozenset({JobStatus.RUNNING}))

    def requeue_unclaimed(self, job_id: str, *, enqueued_before: datetime, at: datetime) -> Job:
        params = {
            "job_id": job_id,
            "enqueued_before": enqueued_before,
            "at": at,
            "now": self._clock(),
        }
        return self._conditional(job_id, _REQUEUE_UNCLAIMED, params, frozenset({JobStatus.QUEUED}))

    def reopen_dead_lettered(self, job_id: str) -> Job:
        current = self.get(job_id)
        if not is_dead_lettered(current):
            raise TransitionConflict(current, frozenset({JobStatus.FAILED}))
        params = {"job_id": job_id, "now": self._clock()}
        return self._conditional(job_id, _REOPEN_FAILED, params, frozenset({JobStatus.FAILED}))

    def _conditional(
        self,
        job_id: str,
        statement: Update,
        params: dict[str, Any],
        expected: frozenset[JobStatus],
    ) -> Job:
        with self._begin() as conn:
            changed = conn.first(statement, params)
            # Only a refused write reads the row again, to say why.
            current = conn.first(_SELECT, {"job_id": job_id}) if changed is None else None
        if changed is not None:
            return _from_row(changed)
        if current is None:
            raise JobNotFound(job_id)
        raise TransitionConflict(_from_row(current), expected)

    def record_progress(self, job_id: str, progress: float, *, lease_s: float | None = None) -> Job:
        now = self._clock()
        # job_id, and the columns to set, by name (see _RECORD_PROGRESS).
        values: dict[str, Any] = {"job_id": job_id, "progress": progress, "updated_at": now}
        if lease_s is not None:
            values["lease_expires_at"] = now + timedelta(seconds=lease_s)
        return self._write_or_read(job_id, _RECORD_PROGRESS, values)

    def record_webhook_delivery(self, job_id: str, delivery: WebhookDelivery) -> Job:
        # Read and append under a row lock (PostgreSQL; SQLite writes are serialised anyway),
        # so concurrent appends neither lose an attempt nor record a second success.
        with self._begin() as conn:
            row = conn.first(_SELECT_FOR_UPDATE, {"job_id": job_id})
            if row is None:
                raise JobNotFound(job_id)
            job = _from_row(row)
            if has_succeeded(job, delivery.event):
                return job
            job = job.with_changes(webhook_deliveries=(*job.webhook_deliveries, delivery))
            deliveries = [d.to_dict() for d in job.webhook_deliveries]
            conn.run(_SET_WEBHOOK_DELIVERIES, {"job_id": job_id, "deliveries": deliveries})
        return job

    def list_owed_webhooks(
        self, *, since: datetime, max_attempts: int, limit: int
    ) -> Sequence[Job]:
        if limit < 1:
            return []
        # The (status, created_at) index bounds the scan to the window; whether a delivery is
        # still owed lives in the JSON list, so it is decided here.
        owed: list[Job] = []
        with self._connect() as conn:
            for row in conn.each(_LIST_FINISHED_WITH_WEBHOOK, {"since": since}):
                job = _from_row(row)
                if is_owed(job, max_attempts=max_attempts):
                    owed.append(job)
                    if len(owed) >= limit:
                        break
        return owed

    def ping(self) -> None:
        with self._connect() as conn:
            conn.run(_PING, {})

    def count_in_flight(self, owner: str) -> int:
        with self._connect() as conn:
            return _count_in_flight(conn, owner)

    def count_images_since(self, owner: str, since: datetime) -> int:
        with self._connect() as conn:
            return _count_images_since(conn, owner, since)

    def mark_enqueued(self, job_id: str, *, at: datetime) -> Job:
        return self._write_or_read(job_id, _MARK_ENQUEUED, {"job_id": job_id, "at": at})

    def _write_or_read(self, job_id: str, statement: Update, params: dict[str, Any]) -> Job:
        """The record after `statement` (UPDATE ... RETURNING), or as it stands when the
        statement's condition left it alone."""
        with self._begin() as conn:
            row = conn.first(statement, params)
            if row is None:
                row = conn.first(_SELECT, {"job_id": job_id})
        if row is None:
            raise JobNotFound(job_id)
        return _from_row(row)

    def list_unenqueued(self, *, created_before: datetime, limit: int) -> Sequence[Job]:
        if limit < 1:
            return []
        params = {"created_before": created_before, "limit": limit}
        with self._connect() as conn:
            return [_from_row(r) for r in conn.all(_LIST_UNENQUEUED, params)]

    def _exists(self, job_id: str) -> bool:
        with self._connect() as conn:
            return conn.first(_SELECT_ID, {"job_id": job_id}) is not None

    def _find_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        params = {"owner": owner, "idempotency_key": key}
        with self._connect() as conn:
            row = conn.first(_SELECT_BY_IDEMPOTENCY_KEY, params)
        return None if row is None else _from_row(row)

    @contextmanager
    def _connect(self) -> Iterator[Statements]:
        try:
            if self._direct is not None:
                with self._direct.connect() as direct:
                    yield direct
            else:
                with self._engine.connect() as conn:
                    yield SqlAlchemyStatements(conn)
        except (OperationalError, SaInterfaceError) as exc:
            raise StoreUnavailable(f"job store unavailable: {exc.orig}") from exc
        except PoolTimeout as exc:  # every pooled connection busy for pool_timeout seconds
            raise StoreUnavailable(f"job store unavailable: {exc}") from exc

    @contextmanager
    def _begin_admission(self, owner: str) -> Iterator[Statements]:
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
            dialect = self._engine.dialect.name
            if dialect == "postgresql":
                conn.run(_ADMISSION_LOCK, {"key": _admission_key(owner)})
            elif dialect == "sqlite":
                conn.run_sql("BEGIN IMMEDIATE")
            yield conn

    @contextmanager
    def _begin(self) -> Iterator[Statements]:
        try:
            if self._direct is not None:
                with self._direct.begin() as direct:
                    yield direct
            else:
                with write_lock(self._engine), self._engine.begin() as conn:
                    yield SqlAlchemyStatements(conn)
        except (OperationalError, SaInterfaceError) as exc:
            raise StoreUnavailable(f"job store unavailable: {exc.orig}") from exc
        except PoolTimeout as exc:  # every pooled connection busy for pool_timeout seconds
            raise StoreUnavailable(f"job store unavailable: {exc}") from exc


def _count_in_flight(conn: Statements, owner: str) -> int:
    return int(conn.scalar(_COUNT_IN_FLIGHT, {"owner": owner}))


def _count_images_since(conn: Statements, owner: str, since: datetime) -> int:
    return int(conn.scalar(_COUNT_IMAGES_SINCE, {"owner": owner, "since": since}))


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
