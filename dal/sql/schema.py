from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
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
    # NULL keys never collide, on SQLite and PostgreSQL alike.
    UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
    Index("ix_jobs_owner_created", "owner", "created_at", "id"),
    Index("ix_jobs_status_created", "status", "created_at"),
    # Per-owner quotas count jobs in flight (revision 0002).
    Index("ix_jobs_owner_status", "owner", "status"),
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
