from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from dal.errors import ApiKeyNotFound
from dal.records import ApiKey


class MemoryApiKeyStore:
    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._lock = threading.Lock()

    def add(self, key: ApiKey) -> ApiKey:
        with self._lock:
            if key.id in self._keys or any(k.key_hash == key.key_hash for k in self._keys.values()):
                raise ValueError("an API key with this id or hash already exists")
            self._keys[key.id] = key
            return key

    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        with self._lock:
            return next((k for k in self._keys.values() if k.key_hash == key_hash), None)

    def list_keys(self, owner: str | None = None) -> Sequence[ApiKey]:
        with self._lock:
            keys = [k for k in self._keys.values() if owner is None or k.owner == owner]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    def revoke(self, key_id: str, *, at: datetime) -> ApiKey:
        with self._lock:
            key = self._keys.get(key_id)
            if key is None:
                raise ApiKeyNotFound(key_id)
            if key.revoked_at is None:
                key = replace(key, revoked_at=at)
                self._keys[key_id] = key
            return key
