"""Keys a process verified are kept (no store read per request), and a revocation made by
any other process is honoured from the next request on (api.api_keys.VerifiedKeys)."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from api.api_keys import ApiKeyService
from dal.memory import LocalKeyRevocations, MemoryApiKeyStore
from dal.ports import KeyRevocations
from dal.records import ApiKey

PEPPER = "pepper"


class CountingKeyStore(MemoryApiKeyStore):
    """The memory store, counting its reads by hash; `during_read` runs inside a read, after
    the record was read (a revocation racing the verification)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.during_read: list[object] = []

    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        self.reads += 1
        found = super().find_by_hash(key_hash)
        while self.during_read:
            action = self.during_read.pop()
            assert callable(action)
            action()
        return found


class Silent:
    """A channel that cannot vouch (Redis down for this process)."""

    def announce(self) -> None:
        pass

    def epoch(self) -> Hashable | None:
        return None

    def listen(self) -> Callable[[], None]:
        return lambda: None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def api_process(store: CountingKeyStore, revocations: KeyRevocations | None) -> ApiKeyService:
    return ApiKeyService(store, pepper=PEPPER, revocations=revocations, keep_verified_s=30)


def test_a_verified_key_is_served_from_memory() -> None:
    store, revocations = CountingKeyStore(), LocalKeyRevocations()
    api = api_process(store, revocations)
    secret = api.issue(owner="alice").secret
    assert api.verified(secret) is None  # not verified yet: the route reads the store
    first = api.authenticate(secret)
    assert first is not None and first.owner == "alice"
    reads = store.reads
    for _ in range(5):
        assert api.verified(secret) == first
        assert api.authenticate(secret) == first
    assert store.reads == reads


def test_a_revocation_by_another_process_is_refused_at_once() -> None:
    """The admin command revokes through its own service (another process); the API
    process refuses the key on its next request."""
    store, revocations = CountingKeyStore(), LocalKeyRevocations()
    api = api_process(store, revocations)
    admin = ApiKeyService(store, pepper=PEPPER, revocations=revocations)
    issued = admin.issue(owner="alice")
    assert api.authenticate(issued.secret) is not None
    admin.revoke(issued.record.id)
    assert api.verified(issued.secret) is None
    assert api.authenticate(issued.secret) is None


def test_a_revocation_during_the_verifying_read_is_not_missed() -> None:
    """The store answered "active" just before the key was revoked: the principal is used
    for that one request, but not kept."""
    store, revocations = CountingKeyStore(), LocalKeyRevocations()
    api = api_process(store, revocations)
    admin = ApiKeyService(store, pepper=PEPPER, revocations=revocations)
    issued = admin.issue(owner="alice")
    store.during_read.append(lambda: admin.revoke(issued.record.id))
    assert api.authenticate(issued.secret) is not None
    assert api.verified(issued.secret) is None
    assert api.authenticate(issued.secret) is None


def test_other_keys_are_read_again_after_any_revocation() -> None:
    store, revocations = CountingKeyStore(), LocalKeyRevocations()
    api = api_process(store, revocations)
    alice, bob = api.issue(owner="alice"), api.issue(owner="bob")
    api.authenticate(alice.secret)
    api.authenticate(bob.secret)
    api.revoke(bob.record.id)
    assert api.verified(alice.secret) is None
    assert api.authenticate(alice.secret) is not None
    assert api.authenticate(bob.secret) is None


def test_a_key_is_kept_for_at_most_the_ttl() -> None:
    clock = Clock()
    api = ApiKeyService(
        CountingKeyStore(),
        pepper=PEPPER,
        revocations=LocalKeyRevocations(),
        keep_verified_s=30,
        monotonic=clock,
    )
    secret = api.issue(owner="alice").secret
    api.authenticate(secret)
    clock.now = 29.9
    assert api.verified(secret) is not None
    clock.now = 30.0
    assert api.verified(secret) is None


def test_nothing_is_kept_without_a_channel_or_while_it_cannot_vouch() -> None:
    for revocations in (None, Silent()):
        store = CountingKeyStore()
        api = api_process(store, revocations)
        secret = api.issue(owner="alice").secret
        for _ in range(3):
            assert api.authenticate(secret) is not None
        assert store.reads == 3
        assert api.verified(secret) is None


def test_unknown_and_revoked_keys_are_never_kept() -> None:
    store = CountingKeyStore()
    api = api_process(store, LocalKeyRevocations())
    issued = api.issue(owner="alice")
    api.revoke(issued.record.id)
    for secret in ("t2i_unknown", issued.secret):
        assert api.authenticate(secret) is None
        assert api.authenticate(secret) is None
    assert store.reads == 4
