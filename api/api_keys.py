"""API keys: minting, hashing with a server-side pepper, authenticating, revoking.

Only HMAC-SHA256(pepper, key) is stored. The hash is deterministic so a key can be looked up by
it; without the pepper a leaked table does not let anyone test guesses offline.

A process keeps the keys it verified (`VerifiedKeys`), so a request costs no store read, but
only while its deployment's revocation channel (dal.ports.KeyRevocations) vouches that no key
was revoked since the read: a revocation through `ApiKeyService.revoke` (the admin command)
is refused by every process from the next request on. KEY_CACHE_TTL_S bounds how long a key
is kept, for revocations that bypass the service (an edit in the database itself).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime

from dal.ports import ApiKeyStore, KeyRevocations
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
class _Kept:
    principal: Principal
    epoch: Hashable
    until: float  # time.monotonic()


class VerifiedKeys:
    """Principals of keys verified against the store, by key hash. An entry holds while the
    revocation channel's epoch is the one read before its store read (a revocation during
    that read moves the epoch, so the entry is born stale) and for at most `ttl_s`."""

    def __init__(
        self,
        revocations: KeyRevocations,
        *,
        ttl_s: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._revocations = revocations
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._clock = clock
        self._kept: dict[str, _Kept] = {}

    def epoch(self) -> Hashable | None:
        return self._revocations.epoch()

    def get(self, key_hash: str) -> Principal | None:
        kept = self._kept.get(key_hash)
        if kept is None:
            return None
        if kept.epoch != self._revocations.epoch() or self._clock() >= kept.until:
            self._kept.pop(key_hash, None)
            return None
        return kept.principal

    def keep(self, key_hash: str, principal: Principal, epoch: Hashable | None) -> None:
        if epoch is None:
            return  # the channel could not vouch for the read
        if len(self._kept) >= self._max_keys:
            # The oldest verification goes first (dicts keep insertion order).
            self._kept.pop(next(iter(self._kept)), None)
        self._kept[key_hash] = _Kept(principal, epoch, self._clock() + self._ttl_s)

    def clear(self) -> None:
        self._kept.clear()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    record: ApiKey
    secret: str  # shown once, never stored


class ApiKeyService:
    def __init__(
        self,
        store: ApiKeyStore,
        *,
        pepper: str,
        clock: Callable[[], datetime] = utcnow,
        revocations: KeyRevocations | None = None,
        keep_verified_s: float = 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`revocations` tells every process of a revocation made here; with it and a
        positive `keep_verified_s`, this service also keeps the keys it verified."""
        self._store = store
        self._pepper = pepper
        self._clock = clock
        self._revocations = revocations
        self._verified = (
            VerifiedKeys(revocations, ttl_s=keep_verified_s, clock=monotonic)
            if revocations is not None and keep_verified_s > 0
            else None
        )

    def listen_for_revocations(self) -> Callable[[], None]:
        """Start hearing other processes' revocations, where this service keeps verified
        keys; returns the function that stops it."""
        if self._revocations is None or self._verified is None:
            return _nothing_to_stop
        return self._revocations.listen()

    def verified(self, presented: str) -> Principal | None:
        """The principal of a key this process verified and may still vouch for; None when
        it must be read from the store (`authenticate`). No I/O beyond a stat()."""
        if self._verified is None or not presented or len(presented) > 256:
            return None
        return self._verified.get(hash_api_key(self._pepper, presented))

    def authenticate(self, presented: str) -> Principal | None:
        if not presented or len(presented) > 256:
            return None
        key_hash = hash_api_key(self._pepper, presented)
        if self._verified is not None:
            kept = self._verified.get(key_hash)
            if kept is not None:
                return kept
        # Read before the store: a revocation during the read moves it.
        epoch = self._verified.epoch() if self._verified is not None else None
        found = self._store.find_by_hash(key_hash)
        # The lookup was by keyed hash; comparing the hash again in constant time keeps a
        # backend's index behaviour from becoming a timing oracle.
        if found is None or not hmac.compare_digest(found.key_hash, key_hash):
            return None
        if not found.is_active:
            return None
        principal = Principal(
            owner=found.owner,
            key_id=found.id,
            max_in_flight=found.max_in_flight,
            images_per_day=found.images_per_day,
            weight=found.weight,
        )
        if self._verified is not None:
            self._verified.keep(key_hash, principal, epoch)
        return principal

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
        """Revoke in the store, then tell every process. Raises StoreUnavailable when the
        store did revoke but the channel is down: processes that keep verified keys may then
        honour the key for up to KEY_CACHE_TTL_S, and the caller must say so."""
        record = self._store.revoke(key_id, at=self._clock())
        if self._verified is not None:
            self._verified.clear()
        if self._revocations is not None:
            self._revocations.announce()
        return record


def _nothing_to_stop() -> None:
    """Nothing was started: this service keeps no verified keys."""
