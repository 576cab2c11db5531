"""The ApiKeyStore contract: one set of cases that every ApiKeyStore adapter must pass.

A test module subclasses `ApiKeyStoreContract` (as `TestXxxApiKeyStore`) and provides a
`store` fixture.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from dal.errors import NotFound
from dal.ports import ApiKeyStore
from dal.records import ApiKey

T0 = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)


def make_key(
    key_id: str, *, owner: str = "alice", at: datetime = T0, **overrides: object
) -> ApiKey:
    values: dict[str, object] = {
        "id": key_id,
        "owner": owner,
        "key_hash": f"hash-of-{key_id}",
        "label": f"label {key_id}",
        "created_at": at,
    }
    values.update(overrides)
    return ApiKey(**values)  # type: ignore[arg-type]


class ApiKeyStoreContract:
    """Cases every ApiKeyStore adapter must pass; subclasses provide the `store` fixture."""

    def test_add_then_find_by_hash_round_trips(self, store: ApiKeyStore) -> None:
        """An added key is found by its hash, equal in every field."""
        key = make_key("k1", label="CI pipeline — ünïcode")
        assert store.add(key) == key
        found = store.find_by_hash(key.key_hash)
        assert found is not None
        assert found == key
        assert found.is_active
        assert found.created_at.utcoffset() == timedelta(0)
        assert found.created_at.microsecond == T0.microsecond

    def test_find_by_unknown_hash_returns_none(self, store: ApiKeyStore) -> None:
        """Looking up a hash that no key has gives None."""
        store.add(make_key("k1"))
        assert store.find_by_hash("hash-of-nothing") is None

    def test_add_with_duplicate_id_raises_value_error(self, store: ApiKeyStore) -> None:
        """A second key with an existing id is refused and the first is kept."""
        first = make_key("k1")
        store.add(first)
        with pytest.raises(ValueError):
            store.add(make_key("k1", key_hash="another-hash", owner="bob"))
        assert store.list_keys() == [first]
        assert store.find_by_hash("another-hash") is None

    def test_add_with_duplicate_hash_raises_value_error(self, store: ApiKeyStore) -> None:
        """A second key with an existing hash is refused and the first is kept."""
        first = make_key("k1")
        store.add(first)
        with pytest.raises(ValueError):
            store.add(make_key("k2", key_hash=first.key_hash, owner="bob"))
        assert store.list_keys() == [first]
        assert store.find_by_hash(first.key_hash) == first

    def test_list_keys_all_and_by_owner_in_creation_order(self, store: ApiKeyStore) -> None:
        """list_keys returns keys oldest first, all of them or one owner's."""
        a2 = make_key("a2", owner="alice", at=T0 + timedelta(seconds=2))
        b1 = make_key("b1", owner="bob", at=T0 + timedelta(seconds=1))
        a0 = make_key("a0", owner="alice", at=T0)
        a3 = make_key("a3", owner="alice", at=T0 + timedelta(seconds=3))
        for key in (a2, b1, a0, a3):
            store.add(key)
        assert list(store.list_keys()) == [a0, b1, a2, a3]
        assert list(store.list_keys(owner="alice")) == [a0, a2, a3]
        assert list(store.list_keys(owner="bob")) == [b1]
        assert list(store.list_keys(owner="nobody")) == []

    def test_revoke_sets_revoked_at_and_deactivates(self, store: ApiKeyStore) -> None:
        """Revoking a key records the time and makes it inactive, still findable by hash."""
        key = make_key("k1")
        store.add(key)
        at = T0 + timedelta(days=1, microseconds=42)
        revoked = store.revoke("k1", at=at)
        assert revoked.revoked_at == at
        assert not revoked.is_active
        assert revoked == replace(key, revoked_at=at)
        assert store.find_by_hash(key.key_hash) == revoked
        assert list(store.list_keys()) == [revoked]

    def test_revoking_twice_keeps_the_first_time(self, store: ApiKeyStore) -> None:
        """A second revocation returns the key unchanged, with the first revocation time."""
        store.add(make_key("k1"))
        first = store.revoke("k1", at=T0 + timedelta(hours=1))
        second = store.revoke("k1", at=T0 + timedelta(hours=2))
        assert second == first
        assert second.revoked_at == T0 + timedelta(hours=1)
        found = store.find_by_hash("hash-of-k1")
        assert found is not None
        assert found.revoked_at == T0 + timedelta(hours=1)

    def test_revoke_unknown_key_raises_not_found(self, store: ApiKeyStore) -> None:
        """Revoking an id that does not exist raises NotFound."""
        store.add(make_key("k1"))
        with pytest.raises(NotFound):
            store.revoke("k-missing", at=T0)
        assert all(k.is_active for k in store.list_keys())

    def test_quota_overrides_round_trip(self, store: ApiKeyStore) -> None:
        """A key's quota overrides (None: the defaults, 0: unlimited) come back as stored."""
        custom = make_key("k1", max_in_flight=3, images_per_day=0)
        plain = make_key("k2")
        store.add(custom)
        store.add(plain)
        assert store.find_by_hash(custom.key_hash) == custom
        found = store.find_by_hash(plain.key_hash)
        assert found is not None
        assert (found.max_in_flight, found.images_per_day) == (None, None)
        assert list(store.list_keys()) == [custom, plain]

    def test_weight_round_trips(self, store: ApiKeyStore) -> None:
        """A key's fair-share weight comes back as stored, through every read."""
        heavy = make_key("k1", weight=3)
        store.add(heavy)
        found = store.find_by_hash(heavy.key_hash)
        assert found is not None
        assert found.weight == 3
        assert found == heavy
        assert list(store.list_keys()) == [heavy]
        revoked = store.revoke("k1", at=T0 + timedelta(hours=1))
        assert revoked.weight == 3

    def test_weight_defaults_to_one(self, store: ApiKeyStore) -> None:
        """A key added without a weight is stored and read back with weight 1."""
        plain = make_key("k1")
        store.add(plain)
        found = store.find_by_hash(plain.key_hash)
        assert found is not None
        assert found.weight == 1
        assert [k.weight for k in store.list_keys()] == [1]
