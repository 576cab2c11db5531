"""The Firestore adapters, on the gcloud Firestore emulator, against the port contracts.

Each test works under its own collection prefix, so tests are independent without wiping the
emulator (which may be a shared one named by FIRESTORE_EMULATOR_HOST)."""

from __future__ import annotations

import functools
import json
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from google.cloud import firestore

from dal.errors import (
    InvalidCursor,
    JobNotFound,
    NotFound,
    StoreUnavailable,
    TransitionConflict,
)
from dal.firestore import FirestoreApiKeyStore, FirestoreJobStore, make_firestore_client
from dal.paging import encode_cursor
from dal.records import ImageRef, JobError, JobStatus, WebhookDelivery
from emulators import firestore as emulators_firestore
from emulators.process import Service, ServiceUnavailable, free_port
from tests.concurrent_callers import at_once
from tests.contracts.api_key_store_contract import ApiKeyStoreContract, make_key
from tests.contracts.job_store_contract import T0, JobStoreContract, ManualClock, make_job
from tests.integration import firestore_service

firestore_emulator = firestore_service.firestore_emulator
firestore_client = firestore_service.firestore_client

INDEXES = Path(__file__).resolve().parents[3] / "firestore.indexes.json"


@pytest.fixture
def prefix() -> str:
    return firestore_service.unique_prefix()


class TestFirestoreJobStore(JobStoreContract):
    @pytest.fixture
    def store(
        self, firestore_client: firestore.Client, prefix: str, clock: ManualClock
    ) -> FirestoreJobStore:
        return FirestoreJobStore(firestore_client, collection_prefix=prefix, clock=clock)


class TestFirestoreApiKeyStore(ApiKeyStoreContract):
    @pytest.fixture
    def store(self, firestore_client: firestore.Client, prefix: str) -> FirestoreApiKeyStore:
        return FirestoreApiKeyStore(firestore_client, collection_prefix=prefix)


# ---- what only the Firestore adapters promise ------------------------------------------------


def test_documents_hold_timestamps_and_maps(
    firestore_client: firestore.Client, prefix: str
) -> None:
    """Times are Firestore timestamps (UTC, microseconds kept), params/images/error are maps,
    and the job lives in {prefix}jobs under its id."""
    store = FirestoreJobStore(firestore_client, collection_prefix=prefix)
    job = make_job(
        "job-1",
        status=JobStatus.FAILED,
        finished_at=T0 + timedelta(microseconds=1),
        error=JobError(code="generation_failed", message="boom"),
        images=(ImageRef(key="images/x/job-1/0.png", width=512, height=512, seed=1),),
    )
    store.create(job)

    raw = firestore_client.collection(f"{prefix}jobs").document("job-1").get().to_dict()
    assert raw is not None
    assert isinstance(raw["created_at"], datetime)
    assert raw["created_at"] == T0
    assert raw["finished_at"] == T0 + timedelta(microseconds=1)
    assert raw["started_at"] is None
    assert raw["params"] == job.params.to_dict()
    assert raw["error"] == {"code": "generation_failed", "message": "boom"}
    assert raw["images"] == [
        {"key": "images/x/job-1/0.png", "width": 512, "height": 512, "seed": 1}
    ]
    assert raw["status"] == "failed"

    loaded = store.get("job-1")
    # The client's DatetimeWithNanoseconds does not leak out of the store.
    assert type(loaded.created_at) is datetime
    assert loaded == job


def test_idempotency_key_side_document_is_written_with_the_job(
    firestore_client: firestore.Client, prefix: str
) -> None:
    """A job with an idempotency key has a side document naming it; one without has none."""
    store = FirestoreJobStore(firestore_client, collection_prefix=prefix)
    store.create(make_job("job-1", idempotency_key="idem"))
    store.create(make_job("job-2"))
    side = list(firestore_client.collection(f"{prefix}idempotency_keys").stream())
    assert len(side) == 1
    assert len(side[0].id) == 64
    assert side[0].to_dict() == {
        "owner": "alice",
        "idempotency_key": "idem",
        "job_id": "job-1",
        "created_at": T0,
    }


def test_collection_prefixes_keep_stores_apart(firestore_client: firestore.Client) -> None:
    """Two stores under different prefixes share nothing, idempotency keys included."""
    first = FirestoreJobStore(firestore_client, collection_prefix=firestore_service.unique_prefix())
    second = FirestoreJobStore(
        firestore_client, collection_prefix=firestore_service.unique_prefix()
    )
    first.create(make_job("job-1", idempotency_key="idem"))
    second.create(make_job("job-2", idempotency_key="idem"))
    with pytest.raises(JobNotFound):
        second.get("job-1")
    assert [j.id for j in first.list_by_owner("alice", limit=10).items] == ["job-1"]
    assert [j.id for j in second.list_by_status(JobStatus.QUEUED, limit=10)] == ["job-2"]


@pytest.mark.parametrize("bad_id", ["a/b", ".", "..", "__reserved__", "", "x" * 1501])
def test_ids_firestore_cannot_hold(
    firestore_client: firestore.Client, prefix: str, bad_id: str
) -> None:
    """An id that cannot be a document id is never found, cannot be created, and cannot sit
    in a cursor."""
    store = FirestoreJobStore(firestore_client, collection_prefix=prefix)
    with pytest.raises(JobNotFound):
        store.get(bad_id)
    with pytest.raises(JobNotFound):
        store.claim(bad_id, lease_s=30)
    with pytest.raises(ValueError, match="document id"):
        store.create(make_job(bad_id))
    with pytest.raises(InvalidCursor):
        store.list_by_owner("alice", limit=10, cursor=encode_cursor(make_job(bad_id)))
    keys = FirestoreApiKeyStore(firestore_client, collection_prefix=prefix)
    with pytest.raises(NotFound):
        keys.revoke(bad_id, at=T0)


def test_bad_collection_prefix_is_refused(firestore_client: firestore.Client) -> None:
    with pytest.raises(ValueError, match="prefix"):
        FirestoreJobStore(firestore_client, collection_prefix="a/b")


def test_concurrent_adds_of_one_key_hash_keep_one(
    firestore_client: firestore.Client, prefix: str
) -> None:
    """Of 3 threads adding different keys with one hash at once, exactly one succeeds."""
    store = FirestoreApiKeyStore(firestore_client, collection_prefix=prefix)
    keys = [make_key(f"k{i}", key_hash="same-hash") for i in range(3)]
    outcomes = at_once([functools.partial(store.add, key) for key in keys])
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(winners) == 1
    assert all(isinstance(o, ValueError) for o in outcomes if o not in winners)
    assert list(store.list_keys()) == winners
    assert store.find_by_hash("same-hash") == winners[0]


def test_ten_concurrent_claims_conflict_without_waiting_for_locks(
    firestore_client: firestore.Client, prefix: str
) -> None:
    """Ten deliveries of one job claim it at once under a deadline shorter than the
    emulator's lock timeout (~2 s): one wins and nine get TransitionConflict, none
    StoreUnavailable. A claim is a conditional write that holds no lock; as transactions,
    ten claims kept aborting one another until the deadline."""
    store = FirestoreJobStore(firestore_client, collection_prefix=prefix, timeout_s=1.5)
    store.create(make_job("job-1"))
    outcomes = at_once([lambda: store.claim("job-1", lease_s=30)] * 10)
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert [type(o) for o in outcomes if o not in winners] == [TransitionConflict] * 9
    assert len(winners) == 1
    assert store.get("job-1") == winners[0]
    assert winners[0].attempts == 1


def test_concurrent_changes_of_one_job_are_not_lost(
    firestore_client: firestore.Client, prefix: str
) -> None:
    """Changes made at once to one job (a claim, the enqueue mark, two webhook deliveries) all
    land: a write whose read is stale is refused by its precondition and made again on a
    fresh read, never over another's change."""
    store = FirestoreJobStore(firestore_client, collection_prefix=prefix)
    store.create(make_job("job-1"))
    outcomes = at_once(
        [
            lambda: store.claim("job-1", lease_s=30),
            lambda: store.mark_enqueued("job-1", at=T0),
            *(
                lambda n=n: store.record_webhook_delivery(
                    "job-1", WebhookDelivery(n, "job.succeeded", T0, status_code=500)
                )
                for n in (1, 2)
            ),
        ]
    )
    assert [o for o in outcomes if isinstance(o, Exception)] == []
    final = store.get("job-1")
    assert (final.status, final.attempts, final.enqueued_at) == (JobStatus.RUNNING, 1, T0)
    assert sorted(d.attempt for d in final.webhook_deliveries) == [1, 2]


def test_a_change_that_changes_nothing_writes_nothing(
    firestore_client: firestore.Client, prefix: str
) -> None:
    """A second enqueue mark, or progress of a job that is not running, leaves the document
    as it was: its update time does not move."""
    store = FirestoreJobStore(firestore_client, collection_prefix=prefix)
    store.create(make_job("job-1"))
    store.mark_enqueued("job-1", at=T0)
    ref = firestore_client.collection(f"{prefix}jobs").document("job-1")
    written = ref.get().update_time
    assert store.mark_enqueued("job-1", at=T0 + timedelta(seconds=1)).enqueued_at == T0
    assert store.record_progress("job-1", 0.5).progress == 0.0
    assert ref.get().update_time == written


def test_unreachable_firestore_raises_store_unavailable_promptly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With nothing listening, reads, plain creates, ping, conditional writes and every
    transaction (begin, reads, commit, rollback: BoundedTransaction) fail with StoreUnavailable
    within the store's timeout instead of the client library's minutes of retries."""
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", dead)
    client = make_firestore_client(firestore_service.PROJECT)
    jobs = FirestoreJobStore(client, timeout_s=1.0)
    keys = FirestoreApiKeyStore(client, timeout_s=1.0)
    calls = [
        jobs.ping,
        lambda: jobs.get("job-1"),
        lambda: jobs.list_by_owner("alice", limit=10),
        lambda: jobs.list_by_status(JobStatus.QUEUED, limit=10),
        lambda: jobs.create(make_job("job-1")),
        lambda: keys.find_by_hash("h"),
        lambda: keys.list_keys(),
        lambda: jobs.create(make_job("job-2", idempotency_key="k")),
        lambda: jobs.claim("job-1", lease_s=30),
        lambda: jobs.transition("job-1", expected={JobStatus.QUEUED}, target=JobStatus.CANCELED),
        lambda: jobs.record_progress("job-1", 0.5),
        lambda: jobs.mark_enqueued("job-1", at=T0),
        lambda: keys.add(make_key("key-1")),
        lambda: keys.revoke("key-1", at=T0),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=dead):
            call()
        assert time.monotonic() - started < 5


def test_indexes_file_declares_the_listing_indexes() -> None:
    """firestore.indexes.json is valid and has the composite indexes the queries need."""
    data = json.loads(INDEXES.read_text())
    declared = {
        (
            index["collectionGroup"],
            index.get("queryScope", "COLLECTION"),
            tuple((f["fieldPath"], f["order"]) for f in index["fields"]),
        )
        for index in data["indexes"]
    }
    assert (
        "jobs",
        "COLLECTION",
        (("owner", "ASCENDING"), ("created_at", "DESCENDING"), ("__name__", "DESCENDING")),
    ) in declared
    assert ("jobs", "COLLECTION", (("status", "ASCENDING"), ("created_at", "ASCENDING"))) in (
        declared
    )
    assert (
        "api_keys",
        "COLLECTION",
        (("owner", "ASCENDING"), ("created_at", "ASCENDING")),
    ) in declared
    for override in data.get("fieldOverrides", []):
        assert {"collectionGroup", "fieldPath", "indexes"} <= override.keys()


# ---- the emulator helpers ----------------------------------------------------------------------


def test_start_reuses_the_emulator_already_on_the_port(firestore_emulator: Service) -> None:
    """start() on a port where the emulator answers starts nothing and owns nothing."""
    again = emulators_firestore.start(firestore_emulator.port, host=firestore_emulator.host)
    assert again.address == firestore_emulator.address
    assert not again.started_here
    emulators_firestore.stop(again)  # a no-op for one it did not start
    assert emulators_firestore.answers(firestore_emulator.host, firestore_emulator.port)


def test_start_refuses_a_port_taken_by_something_else() -> None:
    """A port held by something that is not the emulator is not mistaken for one."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ServiceUnavailable, match="not a Firestore emulator"):
            emulators_firestore.start(port, timeout=2)


def test_reset_wipes_the_emulator(
    firestore_emulator: Service, firestore_client: firestore.Client, prefix: str
) -> None:
    """reset() deletes every document; run only on an emulator this session started."""
    if not firestore_emulator.started_here:
        pytest.skip("the emulator is shared (FIRESTORE_EMULATOR_HOST): not wiping it")
    store = FirestoreJobStore(firestore_client, collection_prefix=prefix)
    store.create(make_job("job-1"))
    emulators_firestore.reset(firestore_emulator.address, firestore_service.PROJECT)
    with pytest.raises(JobNotFound):
        store.get("job-1")
