"""ApiKeyStore on Cloud Firestore.

One document per key in `{prefix}api_keys`, its id the key id. A key hash is made unique by a
side document `{prefix}api_key_hashes/{sha256(key_hash)}` created in the same transaction as
the key; lookups by hash query the key documents (a single-field index, which Firestore keeps
automatically).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore import DocumentReference, DocumentSnapshot

from dal.errors import ApiKeyNotFound
from dal.firestore.client import (
    BoundedTransaction,
    check_prefix,
    from_timestamp,
    hashed_id,
    is_valid_document_id,
    read_retry,
    required_timestamp,
    run_transaction,
    to_timestamp,
    translate_errors,
)
from dal.records import ApiKey

STORE = "API key store"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ATTEMPTS = 10


class FirestoreApiKeyStore:
    def __init__(
        self,
        client: firestore.Client,
        *,
        collection_prefix: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        prefix = check_prefix(collection_prefix)
        self._client = client
        self._keys = client.collection(f"{prefix}api_keys")
        self._hashes = client.collection(f"{prefix}api_key_hashes")
        self._timeout_s = timeout_s
        self._retry = read_retry(timeout_s)
        self._max_attempts = max_attempts

    def add(self, key: ApiKey) -> ApiKey:
        if not is_valid_document_id(key.id):
            raise ValueError(f"API key id {key.id!r} cannot be a Firestore document id")
        data = _to_doc(key)
        ref = self._keys.document(key.id)
        hash_ref = self._hashes.document(hashed_id(key.key_hash))
        with translate_errors(STORE, f"adding API key {key.id!r}"):
            try:
                self._run(_add_key, ref, hash_ref, data)
            except gexc.Conflict as exc:  # a concurrent add committed first
                raise ValueError("an API key with this id or hash already exists") from exc
        return key

    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        query = self._keys.where(filter=firestore.FieldFilter("key_hash", "==", key_hash)).limit(1)
        with translate_errors(STORE, "looking up an API key"):
            snapshots = query.get(retry=self._retry, timeout=self._timeout_s)
        return _from_snapshot(snapshots[0]) if snapshots else None

    def list_keys(self, owner: str | None = None) -> Sequence[ApiKey]:
        query: Any = self._keys
        if owner is not None:
            # Composite index (owner ASC, created_at ASC) in firestore.indexes.json.
            query = query.where(filter=firestore.FieldFilter("owner", "==", owner))
        query = query.order_by("created_at", direction=firestore.Query.ASCENDING).order_by(
            "__name__", direction=firestore.Query.ASCENDING
        )
        with translate_errors(STORE, "listing API keys"):
            snapshots = query.get(retry=self._retry, timeout=self._timeout_s)
        return [_from_snapshot(s) for s in snapshots]

    def revoke(self, key_id: str, *, at: datetime) -> ApiKey:
        if not is_valid_document_id(key_id):
            raise ApiKeyNotFound(key_id)
        revoked_at = to_timestamp(at)
        ref = self._keys.document(key_id)
        with translate_errors(STORE, f"revoking API key {key_id!r}"):
            key: ApiKey = self._run(_revoke_key, ref, revoked_at)
        return key

    def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return run_transaction(
            self._client,
            function,
            *args,
            max_attempts=self._max_attempts,
            deadline_s=self._timeout_s,
        )


def _add_key(
    transaction: BoundedTransaction,
    ref: DocumentReference,
    hash_ref: DocumentReference,
    data: dict[str, Any],
) -> None:
    key_snapshot = transaction.get_document(ref)
    hash_snapshot = transaction.get_document(hash_ref)
    if key_snapshot.exists or hash_snapshot.exists:
        raise ValueError("an API key with this id or hash already exists")
    transaction.create(ref, data)
    transaction.create(hash_ref, {"key_id": ref.id})


def _revoke_key(
    transaction: BoundedTransaction, ref: DocumentReference, at: datetime | None
) -> ApiKey:
    snapshot = transaction.get_document(ref)
    if not snapshot.exists:
        raise ApiKeyNotFound(ref.id)
    key = _from_snapshot(snapshot)
    if key.revoked_at is not None:
        return key
    transaction.update(ref, {"revoked_at": at})
    return replace(key, revoked_at=from_timestamp(at))


def _to_doc(key: ApiKey) -> dict[str, Any]:
    return {
        "owner": key.owner,
        "key_hash": key.key_hash,
        "label": key.label,
        "created_at": to_timestamp(key.created_at),
        "revoked_at": to_timestamp(key.revoked_at),
        "max_in_flight": key.max_in_flight,
        "images_per_day": key.images_per_day,
        "weight": key.weight,
    }


def _from_snapshot(snapshot: DocumentSnapshot) -> ApiKey:
    data = snapshot.to_dict() or {}
    return ApiKey(
        id=snapshot.id,
        owner=data["owner"],
        key_hash=data["key_hash"],
        label=data.get("label") or "",
        created_at=required_timestamp(data["created_at"]),
        revoked_at=from_timestamp(data.get("revoked_at")),
        max_in_flight=data.get("max_in_flight"),
        images_per_day=data.get("images_per_day"),
        # Documents written before weights existed have none: they weigh 1.
        weight=1 if data.get("weight") is None else data["weight"],
    )
