from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Computed,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import DDLCompiler, SQLCompiler

from dal.records import ENQUEUE_FAILED, JobStatus


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores none of the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# jobs.charged_images (revision 0006): the images a job counts against its owner's daily quota,
# as a generated column, so that the count sums ix_jobs_owner_created_charged alone instead of
# reading every one of the owner's rows of the day and parsing its JSON. The rule is
# JobStore.count_images_since's (dal/ports.py), as the JSON query it replaces applied it: the
# job's num_images (1 when absent), or 0 for a job failed with enqueue_failed (never queued).
#
# A generated column's expression is fixed DDL text, and the JSON operators differ: SQLite has
# json_extract, PostgreSQL ->>. So the expression is an element compiled per dialect
# (ChargedImages), and written the way each database reads it back, so that Alembic's
# comparison of the column with the database's (autogenerate, `alembic check`) finds them
# equal. The kind of generated column differs too (_GeneratedColumn): VIRTUAL on SQLite, whose
# ALTER TABLE can add no other kind (an index on it stores the values, which is all the count
# reads), STORED on PostgreSQL, the only kind it can index. Revision 0006 spells out the same
# DDL; tests/integration/test_migrations.py checks the two agree.
CHARGED_IMAGES_SQL = {
    "sqlite": (
        f"CASE WHEN status = '{JobStatus.FAILED.value}' "
        f"AND coalesce(json_extract(error, '$.code'), '') = '{ENQUEUE_FAILED}' THEN 0 "
        "ELSE coalesce(CAST(json_extract(params, '$.num_images') AS INTEGER), 1) END"
    ),
    "postgresql": (
        f"CASE WHEN status = '{JobStatus.FAILED.value}' "
        f"AND coalesce(error ->> 'code', '') = '{ENQUEUE_FAILED}' THEN 0 "
        "ELSE coalesce((params ->> 'num_images')::integer, 1) END"
    ),
}


class ChargedImages(ColumnElement[int]):
    """The expression of jobs.charged_images, in the SQL of the dialect compiling it."""

    __visit_name__ = "charged_images"
    type = Integer()
    inherit_cache = True


@compiles(ChargedImages)
def _charged_images_sql(element: ChargedImages, compiler: SQLCompiler, **kw: Any) -> str:
    dialect = compiler.dialect.name
    if dialect not in CHARGED_IMAGES_SQL:
        raise CompileError(f"jobs.charged_images has no expression for {dialect}")
    return CHARGED_IMAGES_SQL[dialect]


class _GeneratedColumn(Computed):
    """GENERATED ALWAYS AS (...): VIRTUAL on SQLite, STORED elsewhere (persisted=True)."""


@compiles(_GeneratedColumn, "sqlite")
def _virtual_on_sqlite(element: _GeneratedColumn, compiler: DDLCompiler, **kw: Any) -> str:
    sql = compiler.sql_compiler.process(element.sqltext, include_table=False, literal_binds=True)
    return f"GENERATED ALWAYS AS ({sql}) VIRTUAL"


metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("model", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", Float, nullable=False, default=0.0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("params", JSON, nullable=False),
    Column("error", JSON(none_as_null=True), nullable=True),
    Column("images", JSON, nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("request_fingerprint", String(64), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("lease_expires_at", UtcDateTime, nullable=True),
    # Outbox marker: set once the job's message was handed to the queue (revision 0002).
    Column("enqueued_at", UtcDateTime, nullable=True),
    # Hand-overs by the sweeper: lost message, or a worker that died (revision 0004).
    Column("handovers", Integer, nullable=False, default=0, server_default="0"),
    Column("webhook_url", Text, nullable=True),
    # One entry per webhook delivery attempt, oldest first (revision 0002).
    Column("webhook_deliveries", JSON, nullable=False, default=list),
    # Generated, never written: the images the daily quota charges for the job (revision 0006).
    Column("charged_images", Integer, _GeneratedColumn(ChargedImages(), persisted=True)),
    # NULL keys never collide, on SQLite and PostgreSQL alike.
    UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
    Index("ix_jobs_owner_created", "owner", "created_at", "id"),
    Index("ix_jobs_status_created", "status", "created_at"),
    # Per-owner quotas count jobs in flight (revision 0002).
    Index("ix_jobs_owner_status", "owner", "status"),
    # The daily images quota's count reads this index alone (revision 0006).
    Index("ix_jobs_owner_created_charged", "owner", "created_at", "charged_images"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("key_hash", String(128), nullable=False, unique=True),
    Column("label", Text, nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    # Quota overrides; NULL takes the service's default, 0 is unlimited (revision 0003).
    Column("max_in_flight", Integer, nullable=True),
    Column("images_per_day", Integer, nullable=True),
    # Fair-share weight against other keys' waiting jobs, 1 or more (revision 0005).
    Column("weight", Integer, nullable=False, default=1, server_default="1"),
)
