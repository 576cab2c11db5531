"""API keys: minting, hashing with a server-side pepper, authenticating, revoking.

Only HMAC-SHA256(pepper, key) is stored. The hash is deterministic so a key can be looked up by
it; without the pepper a leaked table does not let anyone test guesses offline.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from dal.ports import ApiKeyStore
from dal.records import ApiKey, utcnow

KEY_PREFIX = "t2i_"


def hash_api_key(pepper: str, key: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the owner of the jobs they create and may see."""

    owner: str
    key_id: str
    # The key's quota overrides (None: the service's defaults).
    max_in_flight: int | None = None
    images_per_day: int | None = None
    # The key's fair-share weight against other keys' waiting jobs (ApiKey.weight).
    weight: int = 1


@dataclass(frozen=True, slots=True)
class IssuedKey:
    record: ApiKey
    secret: str  # shown once, never stored


class ApiKeyService:
    def __init__(
        self, store: ApiKeyStore, *, pepper: str, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._store = store
        self._pepper = pepper
        self._clock = clock

    def authenticate(self, presented: str) -> Principal | None:
        if not presented or len(presented) > 256:
            return None
        found = self._store.find_by_hash(hash_api_key(self._pepper, presented))
        # The lookup was by keyed hash; comparing the hash again in constant time keeps a
        # backend's index behaviour from becoming a timing oracle.
        if found is None or not hmac.compare_digest(
            found.key_hash, hash_api_key(self._pepper, presented)
        ):
            return None
        if not found.is_active:
            return None
        return Principal(
            owner=found.owner,
            key_id=found.id,
            max_in_flight=found.max_in_flight,
            images_per_day=found.images_per_day,
            weight=found.weight,
        )

    def issue(
        self,
        *,
        owner: str,
        label: str = "",
        secret: str | None = None,
        max_in_flight: int | None = None,
        images_per_day: int | None = None,
        weight: int = 1,
    ) -> IssuedKey:
        """Mint a key; the quota overrides are None (the defaults), 0 (unlimited) or a limit,
        and the fair-share weight is 1 or more."""
        for name, value in (("max_in_flight", max_in_flight), ("images_per_day", images_per_day)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 (unlimited) or more")
        if weight < 1:
            raise ValueError("weight must be 1 or more")
        secret = secret or KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            id="key_" + secrets.token_hex(8),
            owner=owner,
            key_hash=hash_api_key(self._pepper, secret),
            label=label,
            created_at=self._clock(),
            max_in_flight=max_in_flight,
            images_per_day=images_per_day,
            weight=weight,
        )
        self._store.add(record)
        return IssuedKey(record=record, secret=secret)

    def ensure(self, *, owner: str, secret: str, label: str = "bootstrap") -> ApiKey:
        """Make sure `secret` is a valid key (BOOTSTRAP_API_KEY). Does not revive a revoked one."""
        existing = self._store.find_by_hash(hash_api_key(self._pepper, secret))
        if existing is not None:
            return existing
        try:
            return self.issue(owner=owner, label=label, secret=secret).record
        except ValueError:
            # Another instance added it between our lookup and insert.
            again = self._store.find_by_hash(hash_api_key(self._pepper, secret))
            if again is None:
                raise
            return again

    def list_keys(self, owner: str | None = None) -> list[ApiKey]:
        return list(self._store.list_keys(owner))

    def revoke(self, key_id: str) -> ApiKey:
        return self._store.revoke(key_id, at=self._clock())
