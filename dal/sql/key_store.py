from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from dal.errors import ApiKeyNotFound, StoreUnavailable
from dal.records import ApiKey
from dal.sql.engine import write_lock
from dal.sql.schema import api_keys


class SqlApiKeyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, key: ApiKey) -> ApiKey:
        row = {
            "id": key.id,
            "owner": key.owner,
            "key_hash": key.key_hash,
            "label": key.label,
            "created_at": key.created_at,
            "revoked_at": key.revoked_at,
            "max_in_flight": key.max_in_flight,
            "images_per_day": key.images_per_day,
            "weight": key.weight,
        }
        try:
            with self._begin(write=True) as conn:
                conn.execute(insert(api_keys).values(**row))
        except IntegrityError as exc:
            raise ValueError("an API key with this id or hash already exists") from exc
        return key

    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        with self._begin() as conn:
            row = (
                conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))
                .mappings()
                .first()
            )
        return None if row is None else _from_row(row)

    def list_keys(self, owner: str | None = None) -> Sequence[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if owner is not None:
            query = query.where(api_keys.c.owner == owner)
        with self._begin() as conn:
            return [_from_row(r) for r in conn.execute(query).mappings().all()]

    def revoke(self, key_id: str, *, at: datetime) -> ApiKey:
        with self._begin(write=True) as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        if row is None:
            raise ApiKeyNotFound(key_id)
        return _from_row(row)

    @contextmanager
    def _begin(self, *, write: bool = False) -> Iterator[Connection]:
        lock = write_lock(self._engine) if write else nullcontext()
        try:
            with lock, self._engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise StoreUnavailable(f"key store unavailable: {exc.orig}") from exc
        except PoolTimeout as exc:  # every pooled connection busy for pool_timeout seconds
            raise StoreUnavailable(f"key store unavailable: {exc}") from exc


def _from_row(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"],
        owner=row["owner"],
        key_hash=row["key_hash"],
        label=row["label"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        max_in_flight=row["max_in_flight"],
        images_per_day=row["images_per_day"],
        weight=row["weight"],
    )
