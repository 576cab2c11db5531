from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from dal.errors import ApiKeyNotFound, StoreUnavailable
from dal.records import ApiKey
from dal.sql.engine import write_lock
from dal.sql.schema import api_keys

# Built once and executed with a parameters dict, as in job_store (which says why):
# find_by_hash runs on each authentication that the API's cache of verified keys cannot answer.
_INSERT = insert(api_keys)  # executed with the row's dict: its keys name the columns
_BY_ID = api_keys.c.id == bindparam("key_id")
_SELECT = select(api_keys).where(_BY_ID)
_SELECT_BY_HASH = select(api_keys).where(api_keys.c.key_hash == bindparam("key_hash"))
_OLDEST_FIRST = (api_keys.c.created_at, api_keys.c.id)
_LIST = select(api_keys).order_by(*_OLDEST_FIRST)
_LIST_BY_OWNER = (
    select(api_keys).where(api_keys.c.owner == bindparam("owner")).order_by(*_OLDEST_FIRST)
)
_REVOKE = (
    update(api_keys)
    .where(_BY_ID, api_keys.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("at", type_=api_keys.c.revoked_at.type))
)


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
                conn.execute(_INSERT, row)
        except IntegrityError as exc:
            raise ValueError("an API key with this id or hash already exists") from exc
        return key

    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        with self._begin() as conn:
            row = conn.execute(_SELECT_BY_HASH, {"key_hash": key_hash}).mappings().first()
        return None if row is None else _from_row(row)

    def list_keys(self, owner: str | None = None) -> Sequence[ApiKey]:
        if owner is None:
            query, params = _LIST, {}
        else:
            query, params = _LIST_BY_OWNER, {"owner": owner}
        with self._begin() as conn:
            return [_from_row(r) for r in conn.execute(query, params).mappings().all()]

    def revoke(self, key_id: str, *, at: datetime) -> ApiKey:
        with self._begin(write=True) as conn:
            conn.execute(_REVOKE, {"key_id": key_id, "at": at})
            row = conn.execute(_SELECT, {"key_id": key_id}).mappings().first()
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
