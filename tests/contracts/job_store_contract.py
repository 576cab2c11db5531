"""The JobStore contract: one set of cases that every JobStore adapter must pass.

A test module subclasses `JobStoreContract` (as `TestXxxJobStore`) and provides a `store`
fixture that builds the adapter with `clock` (a `ManualClock`, defined here) as its clock.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import pytest

from dal.errors import (
    DailyImageQuotaExceeded,
    IdempotencyKeyReused,
    InFlightQuotaExceeded,
    InvalidCursor,
    JobNotFound,
    TransitionConflict,
)
from dal.ports import JobStore
from dal.quota_rules import IN_FLIGHT_RETRY_AFTER_S, seconds_to_next_utc_day
from dal.records import (
    TERMINAL_STATUSES,
    ImageRef,
    Job,
    JobChanges,
    JobError,
    JobParams,
    JobStatus,
    WebhookDelivery,
)
from tests.concurrent_callers import at_once

# Microseconds on purpose: adapters must keep them.
T0 = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
HOOK = "https://hooks.example.com/txt2img?tenant=7"


class ManualClock:
    """A clock that only moves when told to; returns tz-aware UTC datetimes."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


GARBAGE_CURSORS = [
    "",
    "garbage",
    "!!!!",
    "not base64 at all ~~~",
    _b64("{}"),
    _b64("[]"),
    _b64('"a string"'),
    _b64('{"t": "2025-01-01T00:00:00+00:00"}'),
    _b64('{"t": "2025-01-01T00:00:00", "id": "job-1"}'),
    _b64('{"t": "2025-01-01T00:00:00+00:00", "id": 7}'),
    _b64('{"t": "yesterday", "id": "job-1"}'),
    _b64('{"t": "0001-01-01T00:00:00+01:00", "id": "job-1"}'),
    _b64('{"t": "9999-12-31T23:59:59-01:00", "id": "job-1"}'),
    _b64("[" * 3000),
]


def make_params(**overrides: object) -> JobParams:
    values: dict[str, object] = {
        "prompt": "a lighthouse at dusk",
        "width": 512,
        "height": 512,
        "num_inference_steps": 20,
        "guidance_scale": 7.5,
        "seed": 1234,
    }
    values.update(overrides)
    return JobParams(**values)  # type: ignore[arg-type]


def make_job(
    job_id: str,
    *,
    owner: str = "alice",
    created_at: datetime = T0,
    **overrides: object,
) -> Job:
    values: dict[str, object] = {
        "id": job_id,
        "owner": owner,
        "params": make_params(),
        "model": "tiny-sd",
        "created_at": created_at,
        "updated_at": created_at,
    }
    values.update(overrides)
    return Job(**values)  # type: ignore[arg-type]


class Within(TypedDict):
    max_in_flight: int
    images_per_day: int
    day_start: datetime


def within(max_in_flight: int, images_per_day: int) -> Within:
    """create_within's limits, for a job of T0's UTC day."""
    day = T0.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"max_in_flight": max_in_flight, "images_per_day": images_per_day, "day_start": day}


def all_pages(store: JobStore, owner: str, limit: int) -> Iterator[tuple[Job, ...]]:
    """Every page of the owner's listing, following next_cursor until it is None."""
    cursor: str | None = None
    for _ in range(1000):
        page = store.list_by_owner(owner, limit=limit, cursor=cursor)
        yield page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
    raise AssertionError("paging did not terminate")


class JobStoreContract:
    """Cases every JobStore adapter must pass; subclasses provide the `store` fixture."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    # ---- create / get ------------------------------------------------------------------------

    def test_create_then_get_round_trips_every_field(self, store: JobStore) -> None:
        """A created job reads back equal in every field, for sparse and fully populated jobs."""
        sparse = make_job("job-sparse", params=make_params(negative_prompt=None))
        full = make_job(
            "job-full",
            owner="bob",
            params=make_params(
                prompt="ünïcödé prompt — with \"quotes\" and 'apostrophes'",
                negative_prompt="blurry, low quality",
                width=768,
                height=640,
                num_inference_steps=31,
                guidance_scale=3.25,
                seed=2**32 - 1,
                num_images=2,
            ),
            status=JobStatus.FAILED,
            progress=0.625,
            attempts=3,
            created_at=T0,
            updated_at=T0 + timedelta(seconds=5, microseconds=1),
            started_at=T0 + timedelta(seconds=1, microseconds=999_999),
            finished_at=T0 + timedelta(seconds=4, microseconds=7),
            error=JobError(code="generation_failed", message="CUDA out of memory"),
            images=(
                ImageRef(key="images/abc/job-full/0.png", width=768, height=640, seed=2**32 - 1),
                ImageRef(key="images/abc/job-full/1.png", width=768, height=640, seed=0),
            ),
            idempotency_key="idem-1",
            request_fingerprint="f" * 64,
        )

        for job in (sparse, full):
            assert store.create(job) == job
            loaded = store.get(job.id)
            assert loaded == job
            for moment in (loaded.created_at, loaded.updated_at, loaded.started_at):
                if moment is not None:
                    assert moment.utcoffset() == timedelta(0)
        assert store.get("job-sparse").params.negative_prompt is None
        assert store.get("job-full").params.negative_prompt == "blurry, low quality"
        assert store.get("job-full").created_at.microsecond == T0.microsecond

    def test_get_missing_id_raises_job_not_found(self, store: JobStore) -> None:
        """Getting an id that was never created raises JobNotFound naming that id."""
        with pytest.raises(JobNotFound) as info:
            store.get("no-such-job")
        assert info.value.job_id == "no-such-job"

    def test_create_same_id_twice_raises_value_error(self, store: JobStore) -> None:
        """A second job with an existing id is refused with ValueError and the first is kept."""
        first = make_job("job-1")
        store.create(first)
        with pytest.raises(ValueError, match="already exists"):
            store.create(make_job("job-1", owner="mallory"))
        assert store.get("job-1") == first

    def test_create_same_job_twice_with_idempotency_key_raises_value_error(
        self, store: JobStore
    ) -> None:
        """A duplicate id is a ValueError even when the new job also reuses an idempotency key."""
        job = make_job("job-1", idempotency_key="idem")
        store.create(job)
        other = make_job("job-2", idempotency_key="other-idem")
        store.create(other)
        with pytest.raises(ValueError, match="already exists"):
            store.create(job)
        with pytest.raises(ValueError, match="already exists"):
            store.create(make_job("job-1", idempotency_key="other-idem"))
        assert store.get("job-1") == job
        assert store.get("job-2") == other

    def test_idempotency_key_reuse_by_same_owner_raises_with_existing_job(
        self, store: JobStore
    ) -> None:
        """Reusing an owner's idempotency key raises IdempotencyKeyReused holding the first job."""
        first = make_job("job-1", idempotency_key="idem", request_fingerprint="a" * 64)
        store.create(first)
        with pytest.raises(IdempotencyKeyReused) as info:
            store.create(make_job("job-2", idempotency_key="idem", request_fingerprint="b" * 64))
        assert info.value.existing == first
        with pytest.raises(JobNotFound):
            store.get("job-2")

    def test_same_idempotency_key_under_two_owners_is_allowed(self, store: JobStore) -> None:
        """Idempotency keys are scoped to their owner, so two owners may use the same one."""
        store.create(make_job("job-1", owner="alice", idempotency_key="idem"))
        store.create(make_job("job-2", owner="bob", idempotency_key="idem"))
        assert store.get("job-1").owner == "alice"
        assert store.get("job-2").owner == "bob"

    def test_jobs_without_idempotency_key_never_collide(self, store: JobStore) -> None:
        """Any number of one owner's jobs may have no idempotency key."""
        for i in range(3):
            store.create(make_job(f"job-{i}", idempotency_key=None))
        assert len(store.list_by_owner("alice", limit=10).items) == 3

    def test_concurrent_creates_with_one_idempotency_key_make_one_job(
        self, store: JobStore
    ) -> None:
        """Of 4 threads creating different jobs under one owner's key at once, exactly one
        creates its job; the others get IdempotencyKeyReused holding the winner's job."""
        contenders = 4
        jobs = [make_job(f"job-{i}", idempotency_key="idem") for i in range(contenders)]
        barrier = threading.Barrier(contenders)
        created: list[Job] = []
        reused: list[IdempotencyKeyReused] = []
        others: list[BaseException] = []
        lock = threading.Lock()

        def create(job: Job) -> None:
            barrier.wait(timeout=10)
            try:
                result = store.create(job)
            except IdempotencyKeyReused as exc:
                with lock:
                    reused.append(exc)
            except BaseException as exc:
                with lock:
                    others.append(exc)
            else:
                with lock:
                    created.append(result)

        threads = [threading.Thread(target=create, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        assert others == []
        assert len(created) == 1
        assert len(reused) == contenders - 1
        assert all(exc.existing == created[0] for exc in reused)
        assert store.list_by_owner("alice", limit=10).items == (created[0],)

    # ---- list_by_owner -----------------------------------------------------------------------

    def test_list_by_owner_is_newest_first_and_only_the_owners_jobs(self, store: JobStore) -> None:
        """list_by_owner returns just that owner's jobs, most recently created first."""
        for i in range(4):
            store.create(make_job(f"a-{i}", owner="alice", created_at=T0 + timedelta(minutes=i)))
            store.create(make_job(f"b-{i}", owner="bob", created_at=T0 + timedelta(minutes=i)))
        page = store.list_by_owner("alice", limit=10)
        assert [j.id for j in page.items] == ["a-3", "a-2", "a-1", "a-0"]
        assert page.next_cursor is None

    @pytest.mark.parametrize("limit", [1, 2, 3, 4, 9, 10, 11])
    def test_paging_visits_every_job_exactly_once_including_ties(
        self, store: JobStore, limit: int
    ) -> None:
        """Following next_cursor visits every job once, ordering equal created_at by id desc."""
        tie = T0 + timedelta(minutes=5)
        created = [
            make_job("j-00", created_at=T0),
            make_job("j-01", created_at=T0 + timedelta(microseconds=1)),
            make_job("j-05", created_at=tie),
            make_job("j-03", created_at=tie),
            make_job("j-09", created_at=tie),
            make_job("j-04", created_at=tie),
            make_job("j-02", created_at=tie),
            make_job("j-07", created_at=T0 + timedelta(hours=1)),
            make_job("j-08", created_at=T0 + timedelta(hours=1)),
            make_job("j-06", created_at=T0 + timedelta(days=1)),
        ]
        for job in created:
            store.create(job)
        store.create(make_job("other", owner="bob", created_at=tie))

        pages = list(all_pages(store, "alice", limit))
        seen = [job.id for page in pages for job in page]
        expected = [j.id for j in sorted(created, key=lambda j: (j.created_at, j.id), reverse=True)]
        assert seen == expected
        assert all(len(page) == limit for page in pages[:-1])
        assert 0 < len(pages[-1]) <= limit
        assert len(pages) == -(-len(created) // limit)

    def test_last_page_has_no_next_cursor(self, store: JobStore) -> None:
        """A page that reaches the end, even one exactly full, has next_cursor None."""
        for i in range(4):
            store.create(make_job(f"job-{i}", created_at=T0 + timedelta(seconds=i)))
        first = store.list_by_owner("alice", limit=2)
        assert first.next_cursor is not None
        last = store.list_by_owner("alice", limit=2, cursor=first.next_cursor)
        assert [j.id for j in last.items] == ["job-1", "job-0"]
        assert last.next_cursor is None
        assert store.list_by_owner("alice", limit=4).next_cursor is None

    def test_list_by_owner_for_unknown_owner_is_empty(self, store: JobStore) -> None:
        """An owner without jobs gets an empty page and no cursor."""
        store.create(make_job("job-1", owner="alice"))
        page = store.list_by_owner("nobody", limit=10)
        assert page.items == ()
        assert page.next_cursor is None

    @pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
    def test_garbage_cursor_raises_invalid_cursor(self, store: JobStore, cursor: str) -> None:
        """A cursor the store did not issue raises InvalidCursor."""
        store.create(make_job("job-1"))
        with pytest.raises(InvalidCursor):
            store.list_by_owner("alice", limit=10, cursor=cursor)

    # ---- list_by_status ----------------------------------------------------------------------

    def test_list_by_status_is_oldest_first_and_limited(self, store: JobStore) -> None:
        """list_by_status returns only jobs in that status, oldest first, at most `limit`."""
        for i in (3, 0, 4, 1, 2):
            store.create(make_job(f"q-{i}", created_at=T0 + timedelta(seconds=i)))
        store.create(make_job("r-0", created_at=T0 - timedelta(days=1), status=JobStatus.RUNNING))
        queued = store.list_by_status(JobStatus.QUEUED, limit=3)
        assert [j.id for j in queued] == ["q-0", "q-1", "q-2"]
        assert [j.id for j in store.list_by_status(JobStatus.QUEUED, limit=100)] == [
            f"q-{i}" for i in range(5)
        ]
        assert [j.id for j in store.list_by_status(JobStatus.RUNNING, limit=10)] == ["r-0"]
        assert list(store.list_by_status(JobStatus.SUCCEEDED, limit=10)) == []

    # ---- transition --------------------------------------------------------------------------

    def test_transition_queued_to_running_applies_changes(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """A claim sets the status, the given fields, increments attempts and bumps updated_at."""
        job = make_job("job-1", created_at=T0)
        store.create(job)
        now = clock.advance(2.5)
        started = now - timedelta(microseconds=3)

        updated = store.transition(
            "job-1",
            expected={JobStatus.QUEUED},
            target=JobStatus.RUNNING,
            changes=JobChanges(started_at=started, increment_attempts=True),
        )

        assert updated.status is JobStatus.RUNNING
        assert updated.started_at == started
        assert updated.attempts == 1
        assert updated.updated_at == now
        assert updated.created_at == T0
        assert updated.finished_at is None
        assert updated.progress == 0.0
        assert store.get("job-1") == updated
        assert updated == job.with_changes(
            status=JobStatus.RUNNING, started_at=started, attempts=1, updated_at=now
        )

    def test_transition_without_changes_changes_only_status_and_updated_at(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """With no JobChanges a transition moves the status and updated_at and nothing else."""
        job = make_job("job-1", attempts=2, progress=0.25)
        store.create(job)
        now = clock.advance(1)
        updated = store.transition(
            "job-1", expected=[JobStatus.QUEUED, JobStatus.RUNNING], target=JobStatus.CANCELED
        )
        assert updated == job.with_changes(status=JobStatus.CANCELED, updated_at=now)
        assert store.get("job-1") == updated

    def test_transition_to_succeeded_stores_images_progress_and_finished_at(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """Finishing a job writes its images, final progress and finished_at."""
        store.create(make_job("job-1"))
        store.transition(
            "job-1",
            expected={JobStatus.QUEUED},
            target=JobStatus.RUNNING,
            changes=JobChanges(started_at=clock.advance(1), increment_attempts=True),
        )
        finished = clock.advance(3)
        images = (ImageRef(key="images/d/job-1/0.png", width=512, height=512, seed=1234),)
        done = store.transition(
            "job-1",
            expected={JobStatus.RUNNING},
            target=JobStatus.SUCCEEDED,
            changes=JobChanges(progress=1.0, finished_at=finished, images=images),
        )
        assert done.status is JobStatus.SUCCEEDED
        assert done.images == images
        assert done.progress == 1.0
        assert done.finished_at == finished
        assert done.started_at == T0 + timedelta(seconds=1)
        assert done.attempts == 1
        assert done.error is None
        assert store.get("job-1") == done

    def test_transition_to_failed_stores_error(self, store: JobStore, clock: ManualClock) -> None:
        """Failing a job writes its error and finished_at."""
        store.create(make_job("job-1"))
        error = JobError(code="publish_failed", message="queue unreachable")
        failed = store.transition(
            "job-1",
            expected={JobStatus.QUEUED},
            target=JobStatus.FAILED,
            changes=JobChanges(error=error, finished_at=clock()),
        )
        assert store.get("job-1") == failed
        assert failed.error == error
        assert failed.finished_at == T0
        assert failed.images == ()

    def test_transition_with_wrong_expected_status_conflicts_and_changes_nothing(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """A job not in an expected status raises TransitionConflict with the current record."""
        store.create(make_job("job-1"))
        running = store.transition("job-1", expected={JobStatus.QUEUED}, target=JobStatus.RUNNING)
        clock.advance(10)
        with pytest.raises(TransitionConflict) as info:
            store.transition(
                "job-1",
                expected={JobStatus.QUEUED},
                target=JobStatus.RUNNING,
                changes=JobChanges(increment_attempts=True, progress=0.5),
            )
        assert info.value.job == running
        assert info.value.expected == frozenset({JobStatus.QUEUED})
        assert store.get("job-1") == running

    def test_transition_forbidden_by_status_machine_raises_value_error(
        self, store: JobStore
    ) -> None:
        """Asking for a transition the status machine forbids raises ValueError, writing nothing."""
        job = make_job("job-1", status=JobStatus.SUCCEEDED)
        store.create(job)
        with pytest.raises(ValueError):
            store.transition("job-1", expected={JobStatus.SUCCEEDED}, target=JobStatus.RUNNING)
        queued = make_job("job-2")
        store.create(queued)
        with pytest.raises(ValueError):
            # One forbidden pair among the expected statuses is enough to refuse.
            store.transition(
                "job-2", expected={JobStatus.QUEUED, JobStatus.RUNNING}, target=JobStatus.RUNNING
            )
        assert store.get("job-1") == job
        assert store.get("job-2") == queued

    @pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
    def test_terminal_jobs_never_change(
        self, store: JobStore, clock: ManualClock, terminal: JobStatus
    ) -> None:
        """A succeeded, failed or canceled job refuses every transition and stays as it was."""
        job = make_job("job-1", status=terminal, finished_at=T0)
        store.create(job)
        clock.advance(60)
        expectations: list[frozenset[JobStatus]] = [
            frozenset({terminal}),
            frozenset(s for s in JobStatus if not s.is_terminal),
        ]
        for target in JobStatus:
            for expected in expectations:
                with pytest.raises((ValueError, TransitionConflict)):
                    store.transition(
                        "job-1",
                        expected=expected,
                        target=target,
                        changes=JobChanges(progress=0.5, increment_attempts=True),
                    )
        assert store.get("job-1") == job

    def test_transition_on_missing_id_raises_job_not_found(self, store: JobStore) -> None:
        """A transition of an id that does not exist raises JobNotFound."""
        with pytest.raises(JobNotFound):
            store.transition("no-such-job", expected={JobStatus.QUEUED}, target=JobStatus.RUNNING)

    def test_concurrent_claims_have_exactly_one_winner(self, store: JobStore) -> None:
        """Of 8 threads claiming the same queued job at once, exactly one wins."""
        store.create(make_job("job-1"))
        contenders = 8
        barrier = threading.Barrier(contenders)
        winners: list[Job] = []
        conflicts: list[TransitionConflict] = []
        others: list[BaseException] = []
        lock = threading.Lock()

        def claim() -> None:
            barrier.wait(timeout=10)
            try:
                job = store.transition(
                    "job-1",
                    expected={JobStatus.QUEUED},
                    target=JobStatus.RUNNING,
                    changes=JobChanges(increment_attempts=True),
                )
            except TransitionConflict as exc:
                with lock:
                    conflicts.append(exc)
            except BaseException as exc:
                with lock:
                    others.append(exc)
            else:
                with lock:
                    winners.append(job)

        threads = [threading.Thread(target=claim) for _ in range(contenders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert others == []
        assert len(winners) == 1
        assert len(conflicts) == contenders - 1
        assert all(c.job.status is JobStatus.RUNNING for c in conflicts)
        final = store.get("job-1")
        assert final.status is JobStatus.RUNNING
        assert final.attempts == 1
        assert final == winners[0]

    # ---- record_progress ---------------------------------------------------------------------

    def test_record_progress_on_running_job_writes_it(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """record_progress on a running job stores the progress and returns the new record."""
        store.create(make_job("job-1"))
        store.transition("job-1", expected={JobStatus.QUEUED}, target=JobStatus.RUNNING)
        now = clock.advance(4)
        record = store.record_progress("job-1", 0.375)
        assert record.progress == 0.375
        assert record.status is JobStatus.RUNNING
        assert record.updated_at == now
        assert store.get("job-1") == record

    @pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.CANCELED, JobStatus.SUCCEEDED])
    def test_record_progress_on_job_not_running_writes_nothing(
        self, store: JobStore, clock: ManualClock, status: JobStatus
    ) -> None:
        """record_progress on a job that is not running changes nothing and shows its status."""
        job = make_job("job-1", status=status, progress=0.125)
        store.create(job)
        clock.advance(4)
        record = store.record_progress("job-1", 0.5)
        assert record == job
        assert record.status is status
        assert store.get("job-1") == job

    def test_record_progress_on_missing_id_raises_job_not_found(self, store: JobStore) -> None:
        """record_progress on an id that does not exist raises JobNotFound."""
        with pytest.raises(JobNotFound):
            store.record_progress("no-such-job", 0.5)

    # ---- webhook deliveries ------------------------------------------------------------------

    def test_record_webhook_delivery_appends_attempts_in_order(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """Attempts are kept oldest first, every field round-tripping (microseconds too)."""
        store.create(make_job("job-1", status=JobStatus.SUCCEEDED, webhook_url=HOOK))
        first = WebhookDelivery(1, "job.succeeded", clock.advance(1), error="ConnectError: refused")
        second = WebhookDelivery(2, "job.succeeded", clock.advance(1.5), status_code=500)
        third = WebhookDelivery(3, "job.succeeded", clock.advance(2.25), status_code=204)
        for delivery in (first, second, third):
            returned = store.record_webhook_delivery("job-1", delivery)
        assert returned.webhook_deliveries == (first, second, third)
        stored = store.get("job-1")
        assert stored.webhook_deliveries == (first, second, third)
        assert stored.status == JobStatus.SUCCEEDED and stored.updated_at == T0

    def test_record_webhook_delivery_after_a_success_of_the_event_writes_nothing(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """One success per event: a later attempt of that event is dropped, another event's
        is recorded."""
        store.create(make_job("job-1", status=JobStatus.FAILED, webhook_url=HOOK))
        success = WebhookDelivery(1, "job.failed", clock.advance(1), status_code=200)
        store.record_webhook_delivery("job-1", success)
        again = store.record_webhook_delivery(
            "job-1", WebhookDelivery(2, "job.failed", clock.advance(1), status_code=200)
        )
        assert again.webhook_deliveries == (success,)
        assert store.get("job-1").webhook_deliveries == (success,)
        other = WebhookDelivery(1, "job.succeeded", clock.advance(1), status_code=200)
        assert store.record_webhook_delivery("job-1", other).webhook_deliveries == (
            success,
            other,
        )

    def test_transitions_keep_webhook_deliveries(self, store: JobStore, clock: ManualClock) -> None:
        """Status changes never drop recorded deliveries."""
        store.create(make_job("job-1", webhook_url=HOOK))
        delivery = WebhookDelivery(1, "job.failed", clock.advance(1), status_code=503)
        store.record_webhook_delivery("job-1", delivery)
        store.claim("job-1", lease_s=30)
        done = store.transition(
            "job-1",
            expected={JobStatus.RUNNING},
            target=JobStatus.SUCCEEDED,
            changes=JobChanges(progress=1.0, finished_at=clock.advance(1)),
        )
        assert done.webhook_deliveries == (delivery,)
        assert store.get("job-1").webhook_deliveries == (delivery,)
        assert store.get("job-1").webhook_url == HOOK

    def test_record_webhook_delivery_on_missing_job_raises_job_not_found(
        self, store: JobStore
    ) -> None:
        """Recording on an id that does not exist raises JobNotFound."""
        with pytest.raises(JobNotFound):
            store.record_webhook_delivery(
                "no-such-job", WebhookDelivery(1, "job.succeeded", T0, status_code=200)
            )

    def test_concurrent_successes_record_exactly_one(self, store: JobStore) -> None:
        """Of several concurrent successes of one event, exactly one is recorded."""
        store.create(make_job("job-1", status=JobStatus.SUCCEEDED, webhook_url=HOOK))
        barrier = threading.Barrier(6)

        def record(n: int) -> None:
            barrier.wait()
            store.record_webhook_delivery(
                "job-1", WebhookDelivery(n, "job.succeeded", T0, status_code=200)
            )

        threads = [threading.Thread(target=record, args=(n,)) for n in range(1, 7)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(store.get("job-1").webhook_deliveries) == 1

    def test_list_owed_webhooks_finds_finished_jobs_still_owing_oldest_first(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """Finished, with a URL, in the window, no success and attempts left; oldest first."""

        def at(minutes: int) -> datetime:
            return T0 + timedelta(minutes=minutes)

        def failed_attempts(event: str, count: int) -> tuple[WebhookDelivery, ...]:
            return tuple(
                WebhookDelivery(n, event, T0, status_code=500) for n in range(1, count + 1)
            )

        ok = WebhookDelivery(1, "job.canceled", T0, status_code=200)
        jobs = [
            make_job("too-old", created_at=at(0), status=JobStatus.SUCCEEDED, webhook_url=HOOK),
            make_job("owed-late", created_at=at(9), status=JobStatus.FAILED, webhook_url=HOOK),
            make_job("queued", created_at=at(2), webhook_url=HOOK),
            make_job("no-url", created_at=at(3), status=JobStatus.SUCCEEDED),
            make_job("owed-early", created_at=at(4), status=JobStatus.SUCCEEDED, webhook_url=HOOK),
            make_job(
                "delivered",
                created_at=at(5),
                status=JobStatus.CANCELED,
                webhook_url=HOOK,
                webhook_deliveries=(ok,),
            ),
            make_job(
                "given-up",
                created_at=at(6),
                status=JobStatus.SUCCEEDED,
                webhook_url=HOOK,
                webhook_deliveries=failed_attempts("job.succeeded", 3),
            ),
            make_job(
                "retrying",
                created_at=at(7),
                status=JobStatus.CANCELED,
                webhook_url=HOOK,
                webhook_deliveries=failed_attempts("job.canceled", 2),
            ),
            # Its earlier event was delivered; the event of its current status is owed.
            make_job(
                "new-event",
                created_at=at(8),
                status=JobStatus.SUCCEEDED,
                webhook_url=HOOK,
                webhook_deliveries=(WebhookDelivery(1, "job.failed", T0, status_code=204),),
            ),
        ]
        for job in jobs:
            store.create(job)

        owed = store.list_owed_webhooks(since=at(1), max_attempts=3, limit=10)
        assert [j.id for j in owed] == ["owed-early", "retrying", "new-event", "owed-late"]
        limited = store.list_owed_webhooks(since=at(1), max_attempts=3, limit=2)
        assert [j.id for j in limited] == ["owed-early", "retrying"]
        assert store.list_owed_webhooks(since=at(10), max_attempts=3, limit=10) == []

    def test_ping_succeeds(self, store: JobStore) -> None:
        """ping returns without error on a reachable store."""
        store.ping()

    def test_record_progress_with_lease_s_renews_the_lease(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """record_progress(lease_s=...) moves the lease to now + lease_s; without it the lease
        stays where it was."""
        store.create(make_job("job-1"))
        claimed = store.claim("job-1", lease_s=30)
        assert claimed.lease_expires_at == T0 + timedelta(seconds=30)

        now = clock.advance(20)
        renewed = store.record_progress("job-1", 0.25, lease_s=45.5)
        assert renewed.lease_expires_at == now + timedelta(seconds=45.5)
        assert renewed.progress == 0.25
        assert renewed.updated_at == now
        assert store.get("job-1") == renewed

        later = clock.advance(10)
        kept = store.record_progress("job-1", 0.5)
        assert kept.lease_expires_at == now + timedelta(seconds=45.5)
        assert kept.progress == 0.5
        assert kept.updated_at == later
        assert store.get("job-1") == kept

    def test_record_progress_with_lease_s_on_job_not_running_writes_nothing(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """A lease renewal on a job that is no longer running changes nothing."""
        store.create(make_job("job-1"))
        store.claim("job-1", lease_s=30)
        canceled = store.transition(
            "job-1", expected={JobStatus.RUNNING}, target=JobStatus.CANCELED
        )
        clock.advance(5)
        record = store.record_progress("job-1", 0.75, lease_s=30)
        assert record == canceled
        assert record.lease_expires_at is None
        assert store.get("job-1") == canceled

    # ---- claim -------------------------------------------------------------------------------

    def test_claim_queued_job_starts_an_attempt_under_a_lease(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """claim moves queued → running, counts the attempt, sets started_at and the lease."""
        job = make_job("job-1", attempts=0)
        store.create(job)
        now = clock.advance(3)

        claimed = store.claim("job-1", lease_s=30)

        assert claimed == job.with_changes(
            status=JobStatus.RUNNING,
            attempts=1,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=30),
            updated_at=now,
        )
        assert store.get("job-1") == claimed

    def test_claim_round_trips_a_fractional_lease(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """A lease of a fraction of a second is stored to the microsecond."""
        store.create(make_job("job-1"))
        now = clock.advance(0.000001)
        claimed = store.claim("job-1", lease_s=0.25)
        assert claimed.lease_expires_at == now + timedelta(microseconds=250_000)
        loaded = store.get("job-1")
        assert loaded.lease_expires_at == now + timedelta(microseconds=250_000)
        assert loaded.lease_expires_at is not None
        assert loaded.lease_expires_at.utcoffset() == timedelta(0)

    def test_claim_of_running_job_under_live_lease_conflicts(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """A running job whose lease has not expired cannot be claimed; nothing changes."""
        store.create(make_job("job-1"))
        claimed = store.claim("job-1", lease_s=30)
        clock.advance(29.999)
        with pytest.raises(TransitionConflict) as info:
            store.claim("job-1", lease_s=30)
        assert info.value.job == claimed
        assert store.get("job-1") == claimed

    def test_claim_takes_over_running_job_after_its_lease_expires(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """Once the lease has passed, a claim takes the job over: a second attempt under a new
        lease, with the first attempt's started_at kept."""
        store.create(make_job("job-1"))
        first = store.claim("job-1", lease_s=30)
        now = clock.advance(30.5)

        second = store.claim("job-1", lease_s=60)

        assert second.status is JobStatus.RUNNING
        assert second.attempts == 2
        assert second.started_at == first.started_at == T0
        assert second.lease_expires_at == now + timedelta(seconds=60)
        assert second.updated_at == now
        assert store.get("job-1") == second

    def test_claim_after_release_keeps_started_at_and_counts_attempts(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """started_at is set by the first claim only; every claim counts an attempt."""
        store.create(make_job("job-1"))
        store.claim("job-1", lease_s=30)
        clock.advance(5)
        store.release("job-1", error=JobError(code="transient", message="try again"))
        now = clock.advance(5)
        again = store.claim("job-1", lease_s=30)
        assert again.attempts == 2
        assert again.started_at == T0
        assert again.lease_expires_at == now + timedelta(seconds=30)
        assert store.get("job-1") == again

    @pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
    def test_claim_of_finished_job_conflicts(
        self, store: JobStore, clock: ManualClock, terminal: JobStatus
    ) -> None:
        """A succeeded, failed or canceled job cannot be claimed, whatever its old lease said."""
        job = make_job(
            "job-1",
            status=terminal,
            attempts=1,
            started_at=T0,
            finished_at=T0 + timedelta(seconds=1),
        )
        store.create(job)
        clock.advance(3600)
        with pytest.raises(TransitionConflict) as info:
            store.claim("job-1", lease_s=30)
        assert info.value.job == job
        assert store.get("job-1") == job

    def test_claim_of_missing_job_raises_job_not_found(self, store: JobStore) -> None:
        """Claiming an id that does not exist raises JobNotFound."""
        with pytest.raises(JobNotFound):
            store.claim("no-such-job", lease_s=30)

    def test_concurrent_claim_calls_have_exactly_one_winner(self, store: JobStore) -> None:
        """Of 8 threads calling claim on the same queued job at once, exactly one wins."""
        store.create(make_job("job-1"))
        contenders = 8
        barrier = threading.Barrier(contenders)
        winners: list[Job] = []
        conflicts: list[TransitionConflict] = []
        others: list[BaseException] = []
        lock = threading.Lock()

        def claim() -> None:
            barrier.wait(timeout=10)
            try:
                job = store.claim("job-1", lease_s=30)
            except TransitionConflict as exc:
                with lock:
                    conflicts.append(exc)
            except BaseException as exc:
                with lock:
                    others.append(exc)
            else:
                with lock:
                    winners.append(job)

        threads = [threading.Thread(target=claim) for _ in range(contenders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        assert others == []
        assert len(winners) == 1
        assert len(conflicts) == contenders - 1
        assert all(c.job.status is JobStatus.RUNNING for c in conflicts)
        final = store.get("job-1")
        assert final.attempts == 1
        assert final == winners[0]

    # ---- hand-overs by the sweeper ----------------------------------------------------------

    def test_requeue_lapsed_takes_back_a_job_whose_worker_stopped_renewing(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """Only once the lease has lapsed: running → queued, lease dropped, the error kept,
        enqueued_at the new hand-over, one more handover; attempts unchanged."""
        store.create(make_job("job-1"))
        store.claim("job-1", lease_s=30)
        error = JobError(code="lease_expired", message="its worker stopped")
        with pytest.raises(TransitionConflict) as live:
            store.requeue_lapsed("job-1", error=error, at=clock.advance(29))
        assert live.value.job.status is JobStatus.RUNNING
        now = clock.advance(1)

        requeued = store.requeue_lapsed("job-1", error=error, at=now)

        assert requeued.status is JobStatus.QUEUED
        assert (requeued.lease_expires_at, requeued.error) == (None, error)
        assert (requeued.enqueued_at, requeued.updated_at) == (now, now)
        assert (requeued.handovers, requeued.attempts) == (1, 1)
        assert store.get("job-1") == requeued
        with pytest.raises(TransitionConflict):
            store.requeue_lapsed("job-1", error=error, at=now)
        assert store.claim("job-1", lease_s=30).attempts == 2

    def test_requeue_lapsed_of_a_renewed_lease_conflicts(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """A heartbeat that renewed the lease wins over the sweeper."""
        store.create(make_job("job-1"))
        store.claim("job-1", lease_s=30)
        clock.advance(20)
        store.record_progress("job-1", 0.1, lease_s=30)
        now = clock.advance(20)
        with pytest.raises(TransitionConflict):
            store.requeue_lapsed("job-1", error=JobError("x", "y"), at=now)
        assert store.get("job-1").status is JobStatus.RUNNING

    def test_requeue_unclaimed_hands_over_once_per_bound(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """A queued job handed over at or before the bound is handed over again, once: the new
        enqueued_at moves it past the bound for every other sweeper."""
        store.create(make_job("job-1"))
        first = store.mark_enqueued("job-1", at=clock())
        assert first.enqueued_at == T0
        now = clock.advance(60)

        again = store.requeue_unclaimed(
            "job-1", enqueued_before=now - timedelta(seconds=30), at=now
        )

        assert (again.status, again.enqueued_at, again.handovers) == (JobStatus.QUEUED, now, 1)
        assert store.get("job-1") == again
        with pytest.raises(TransitionConflict):
            store.requeue_unclaimed("job-1", enqueued_before=now - timedelta(seconds=30), at=now)

    @pytest.mark.parametrize("case", ["never_enqueued", "recent", "claimed", "ended"])
    def test_requeue_unclaimed_leaves_other_jobs_alone(
        self, store: JobStore, clock: ManualClock, case: str
    ) -> None:
        store.create(make_job("job-1"))
        if case != "never_enqueued":
            store.mark_enqueued("job-1", at=clock.advance(10))
        if case == "claimed":
            store.claim("job-1", lease_s=30)
        if case == "ended":
            store.transition("job-1", expected={JobStatus.QUEUED}, target=JobStatus.CANCELED)
        before = store.get("job-1")
        with pytest.raises(TransitionConflict):
            store.requeue_unclaimed("job-1", enqueued_before=T0 + timedelta(seconds=5), at=clock())
        assert store.get("job-1") == before

    def test_hand_overs_of_a_missing_job_raise_job_not_found(self, store: JobStore) -> None:
        with pytest.raises(JobNotFound):
            store.requeue_lapsed("no-such-job", error=JobError("x", "y"), at=T0)
        with pytest.raises(JobNotFound):
            store.requeue_unclaimed("no-such-job", enqueued_before=T0, at=T0)

    # ---- release -----------------------------------------------------------------------------

    def test_release_running_job_requeues_it_with_the_error(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """release moves running → queued, keeps the error, drops the lease, keeps attempts."""
        store.create(make_job("job-1"))
        claimed = store.claim("job-1", lease_s=30)
        store.record_progress("job-1", 0.5)
        now = clock.advance(7)
        error = JobError(code="worker_lost", message="CUDA error: device lost")

        released = store.release("job-1", error=error)

        assert released.status is JobStatus.QUEUED
        assert released.error == error
        assert released.lease_expires_at is None
        assert released.attempts == 1
        assert released.started_at == claimed.started_at
        assert released.finished_at is None
        assert released.updated_at == now
        assert store.get("job-1") == released

    @pytest.mark.parametrize(
        "status", [JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED]
    )
    def test_release_of_job_not_running_conflicts(
        self, store: JobStore, clock: ManualClock, status: JobStatus
    ) -> None:
        """Only a running job can be released; anything else conflicts and stays as it was."""
        job = make_job("job-1", status=status)
        store.create(job)
        clock.advance(1)
        with pytest.raises(TransitionConflict) as info:
            store.release("job-1", error=JobError(code="transient", message="x"))
        assert info.value.job == job
        assert store.get("job-1") == job

    def test_release_of_missing_job_raises_job_not_found(self, store: JobStore) -> None:
        """Releasing an id that does not exist raises JobNotFound."""
        with pytest.raises(JobNotFound):
            store.release("no-such-job", error=JobError(code="transient", message="x"))

    def test_error_of_a_released_attempt_stays_until_cleared(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """The last error survives the next claim; a transition with clear_error drops it."""
        store.create(make_job("job-1"))
        store.claim("job-1", lease_s=30)
        error = JobError(code="transient", message="first attempt failed")
        store.release("job-1", error=error)
        clock.advance(1)
        again = store.claim("job-1", lease_s=30)
        assert again.error == error

        done = store.transition(
            "job-1",
            expected={JobStatus.RUNNING},
            target=JobStatus.SUCCEEDED,
            changes=JobChanges(progress=1.0, finished_at=clock.advance(2), clear_error=True),
        )
        assert done.error is None
        assert store.get("job-1").error is None
        assert store.get("job-1") == done

    def test_clear_error_loses_to_a_new_error(self, store: JobStore, clock: ManualClock) -> None:
        """A transition that both clears and sets an error stores the new one."""
        store.create(make_job("job-1"))
        store.claim("job-1", lease_s=30)
        store.release("job-1", error=JobError(code="transient", message="old"))
        new = JobError(code="publish_failed", message="new")
        failed = store.transition(
            "job-1",
            expected={JobStatus.QUEUED},
            target=JobStatus.FAILED,
            changes=JobChanges(error=new, clear_error=True, finished_at=clock()),
        )
        assert failed.error == new
        assert store.get("job-1") == failed

    @pytest.mark.parametrize(
        "target", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.QUEUED]
    )
    def test_transition_out_of_running_clears_the_lease(
        self, store: JobStore, clock: ManualClock, target: JobStatus
    ) -> None:
        """A lease only means something while running: leaving running drops it."""
        store.create(make_job("job-1"))
        store.claim("job-1", lease_s=30)
        clock.advance(1)
        moved = store.transition("job-1", expected={JobStatus.RUNNING}, target=target)
        assert moved.lease_expires_at is None
        assert store.get("job-1").lease_expires_at is None

    def test_running_job_with_lease_round_trips(self, store: JobStore) -> None:
        """A job created running under a lease reads back equal, lease included."""
        job = make_job(
            "job-1",
            status=JobStatus.RUNNING,
            attempts=1,
            started_at=T0,
            lease_expires_at=T0 + timedelta(seconds=30, microseconds=123_457),
        )
        store.create(job)
        assert store.get("job-1") == job

    # ---- reopen_dead_lettered ----------------------------------------------------------------

    def test_reopen_dead_lettered_job_requeues_it(
        self, store: JobStore, clock: ManualClock
    ) -> None:
        """A job failed as dead_lettered goes back to queued: error, progress and finish time
        cleared, attempts and started_at kept."""
        store.create(make_job("job-1"))
        store.claim("job-1", lease_s=30)
        store.record_progress("job-1", 0.5)
        failed = store.transition(
            "job-1",
            expected={JobStatus.RUNNING},
            target=JobStatus.FAILED,
            changes=JobChanges(
                error=JobError(code="dead_lettered", message="delivery attempts exhausted"),
                finished_at=clock.advance(10),
            ),
        )
        now = clock.advance(3600)

        reopened = store.reopen_dead_lettered("job-1")

        assert reopened == failed.with_changes(
            status=JobStatus.QUEUED,
            error=None,
            progress=0.0,
            finished_at=None,
            lease_expires_at=None,
            updated_at=now,
        )
        assert reopened.attempts == 1
        assert store.get("job-1") == reopened
        # The replayed job runs again like any queued one.
        assert store.claim("job-1", lease_s=30).attempts == 2

    @pytest.mark.parametrize(
        "job",
        [
            make_job(
                "job-1",
                status=JobStatus.FAILED,
                error=JobError(code="generation_failed", message="boom"),
                finished_at=T0,
            ),
            make_job("job-1", status=JobStatus.FAILED, finished_at=T0),
            make_job("job-1", status=JobStatus.SUCCEEDED, progress=1.0, finished_at=T0),
            make_job("job-1", status=JobStatus.CANCELED, finished_at=T0),
            make_job("job-1", status=JobStatus.QUEUED),
            make_job(
                "job-1",
                status=JobStatus.QUEUED,
                error=JobError(code="dead_lettered", message="queued with an old error"),
            ),
            make_job(
                "job-1",
                status=JobStatus.RUNNING,
                started_at=T0,
                lease_expires_at=T0 + timedelta(seconds=30),
            ),
        ],
        ids=[
            "failed-other-code",
            "failed-no-error",
            "succeeded",
            "canceled",
            "queued",
            "queued-dead-lettered-error",
            "running",
        ],
    )
    def test_reopen_of_job_not_dead_lettered_conflicts(
        self, store: JobStore, clock: ManualClock, job: Job
    ) -> None:
        """Only a job failed with code dead_lettered can be reopened; others stay as they were."""
        store.create(job)
        clock.advance(1)
        with pytest.raises(TransitionConflict) as info:
            store.reopen_dead_lettered("job-1")
        assert info.value.job == job
        assert store.get("job-1") == job

    def test_reopen_of_missing_job_raises_job_not_found(self, store: JobStore) -> None:
        """Reopening an id that does not exist raises JobNotFound."""
        with pytest.raises(JobNotFound):
            store.reopen_dead_lettered("no-such-job")

    # ---- quotas --------------------------------------------------------------------------

    def test_count_in_flight_counts_the_owners_queued_and_running_jobs(
        self, store: JobStore
    ) -> None:
        """Queued and running jobs count; finished ones and other owners' jobs do not."""
        assert store.count_in_flight("alice") == 0
        store.create(make_job("q1"))
        store.create(make_job("q2"))
        store.create(make_job("r1"))
        store.claim("r1", lease_s=60)
        for job_id, target in (("s1", JobStatus.SUCCEEDED), ("c1", JobStatus.CANCELED)):
            store.create(make_job(job_id))
            store.claim(job_id, lease_s=60)
            store.transition(job_id, expected={JobStatus.RUNNING}, target=target)
        store.create(make_job("b1", owner="bob"))
        assert store.count_in_flight("alice") == 3
        assert store.count_in_flight("bob") == 1
        assert store.count_in_flight("carol") == 0

    def test_count_images_since_sums_num_images_from_the_cutoff(self, store: JobStore) -> None:
        """num_images of the owner's jobs created at or after `since`, in every status but
        failed/enqueue_failed; older jobs and other owners' jobs are not counted."""
        day = T0.replace(hour=0, minute=0, second=0, microsecond=0)
        store.create(make_job("yesterday", created_at=day - timedelta(microseconds=1)))
        store.create(make_job("midnight", created_at=day, params=make_params(num_images=2)))
        store.create(make_job("later", created_at=T0, params=make_params(num_images=4)))
        store.create(make_job("canceled", created_at=T0, params=make_params(num_images=3)))
        store.transition("canceled", expected={JobStatus.QUEUED}, target=JobStatus.CANCELED)
        for job_id, code in (("lost", "enqueue_failed"), ("broken", "generation_failed")):
            store.create(make_job(job_id, created_at=T0, params=make_params(num_images=4)))
            store.transition(
                job_id,
                expected={JobStatus.QUEUED},
                target=JobStatus.FAILED,
                changes=JobChanges(error=JobError(code, "x")),
            )
        store.create(make_job("bobs", owner="bob", created_at=T0))
        assert store.count_images_since("alice", day) == 2 + 4 + 3 + 4
        assert store.count_images_since("alice", T0) == 4 + 3 + 4
        assert store.count_images_since("alice", T0 + timedelta(microseconds=1)) == 0
        assert store.count_images_since("bob", day) == 1
        assert store.count_images_since("carol", day) == 0

    # ---- admission under quotas (create_within) -------------------------------------------

    def test_create_within_admits_jobs_within_the_limits(self, store: JobStore) -> None:
        """Jobs within both limits are created as create would create them; 0 is unlimited."""
        for i in range(3):
            job = make_job(f"job-{i}", params=make_params(num_images=2))
            assert store.create_within(job, **within(3, 6)) == job
            assert store.get(job.id) == job
        for i in range(3):
            store.create_within(make_job(f"free-{i}"), **within(0, 0))
        assert store.count_in_flight("alice") == 6

    def test_create_within_refuses_the_job_past_the_in_flight_limit(self, store: JobStore) -> None:
        """At the limit: InFlightQuotaExceeded with the limit, the usage and Retry-After, and
        nothing recorded; another owner has a budget of their own."""
        store.create_within(make_job("job-1"), **within(2, 0))
        store.create_within(make_job("job-2"), **within(2, 0))
        with pytest.raises(InFlightQuotaExceeded) as refused:
            store.create_within(make_job("job-3"), **within(2, 0))
        assert refused.value.code == "quota-in-flight-exceeded"
        assert (refused.value.limit, refused.value.usage) == (2, 2)
        assert refused.value.retry_after_s == IN_FLIGHT_RETRY_AFTER_S
        assert str(refused.value) == (
            "2 jobs are queued or running; at most 2 may be at once. Submit again when one "
            "has finished."
        )
        with pytest.raises(JobNotFound):
            store.get("job-3")
        store.create_within(make_job("bobs", owner="bob"), **within(2, 0))
        assert store.count_in_flight("alice") == 2

    def test_create_within_refuses_the_job_past_the_images_per_day(self, store: JobStore) -> None:
        """The day's images plus the job's may not pass the limit; yesterday's do not count,
        Retry-After runs to the next day, and the daily refusal comes first."""
        day = T0.replace(hour=0, minute=0, second=0, microsecond=0)
        store.create(make_job("yesterday", created_at=day - timedelta(seconds=1)))
        store.create_within(make_job("four", params=make_params(num_images=4)), **within(0, 5))
        with pytest.raises(DailyImageQuotaExceeded) as refused:
            store.create_within(make_job("two", params=make_params(num_images=2)), **within(1, 5))
        assert refused.value.code == "quota-images-per-day-exceeded"
        assert (refused.value.limit, refused.value.usage, refused.value.requested) == (5, 4, 2)
        assert refused.value.retry_after_s == seconds_to_next_utc_day(T0)
        assert "4 of the 5 images allowed per UTC day are used" in str(refused.value)
        with pytest.raises(JobNotFound):
            store.get("two")
        store.create_within(make_job("one"), **within(0, 5))
        assert store.count_images_since("alice", day) == 5

    def test_create_within_counts_ended_jobs_out_of_flight(self, store: JobStore) -> None:
        """A job that ends (canceled, failed, succeeded) frees its place; running ones hold it."""
        for i in range(3):
            store.create_within(make_job(f"job-{i}"), **within(3, 0))
        store.claim("job-0", lease_s=60)
        with pytest.raises(InFlightQuotaExceeded):
            store.create_within(make_job("job-3"), **within(3, 0))
        ends = (
            ("job-0", {JobStatus.RUNNING}, JobStatus.SUCCEEDED, None),
            ("job-1", {JobStatus.QUEUED}, JobStatus.CANCELED, None),
            ("job-2", {JobStatus.QUEUED}, JobStatus.FAILED, JobChanges(error=JobError("x", "y"))),
        )
        for job_id, expected, target, changes in ends:
            store.transition(job_id, expected=expected, target=target, changes=changes)
            store.create_within(make_job(f"after-{job_id}"), **within(3, 0))
        with pytest.raises(InFlightQuotaExceeded):
            store.create_within(make_job("one-too-many"), **within(3, 0))
        assert store.count_in_flight("alice") == 3

    def test_concurrent_admissions_never_pass_the_limit(self, store: JobStore) -> None:
        """20 admissions of one owner at once under a limit of 5: exactly 5 are created."""
        jobs = [make_job(f"job-{i:02d}") for i in range(20)]

        def admit(job: Job) -> Callable[[], Job]:
            return lambda: store.create_within(job, **within(5, 0))

        outcomes = at_once([admit(job) for job in jobs])
        created = [o for o in outcomes if isinstance(o, Job)]
        refused = [o for o in outcomes if isinstance(o, InFlightQuotaExceeded)]
        assert [o for o in outcomes if not isinstance(o, (Job, InFlightQuotaExceeded))] == []
        assert (len(created), len(refused)) == (5, 15)
        assert store.count_in_flight("alice") == 5
        listed = store.list_by_owner("alice", limit=50).items
        assert sorted(j.id for j in listed) == sorted(j.id for j in created)

    def test_create_within_refuses_a_reused_key_or_id_before_any_quota(
        self, store: JobStore
    ) -> None:
        """As create does: a duplicate id is a ValueError, then a reused idempotency key is
        IdempotencyKeyReused with the existing job, even at the limit (a replay is not
        charged); the key stays unique per owner through create_within."""
        first = make_job("job-1", idempotency_key="idem", params=make_params(num_images=2))
        store.create_within(first, **within(1, 2))
        with pytest.raises(IdempotencyKeyReused) as reused:
            store.create_within(
                make_job("job-2", idempotency_key="idem", params=make_params(num_images=2)),
                **within(1, 2),
            )
        assert reused.value.existing == first
        with pytest.raises(IdempotencyKeyReused):
            store.create(make_job("job-3", idempotency_key="idem"))
        with pytest.raises(ValueError, match="already exists"):
            store.create_within(make_job("job-1", idempotency_key="other"), **within(1, 2))
        with pytest.raises(InFlightQuotaExceeded):
            store.create_within(make_job("job-4", idempotency_key="new"), **within(1, 0))
        for job_id in ("job-2", "job-3", "job-4"):
            with pytest.raises(JobNotFound):
                store.get(job_id)
        store.create_within(make_job("bobs", owner="bob", idempotency_key="idem"), **within(1, 2))

    # ---- outbox --------------------------------------------------------------------------

    def test_mark_enqueued_sets_the_marker_once_and_nothing_else(self, store: JobStore) -> None:
        """The first mark wins; status, updated_at and the rest stay as they were, in any
        status."""
        created = store.create(make_job("job-1"))
        first = store.mark_enqueued("job-1", at=T0 + timedelta(seconds=1))
        assert first == created.with_changes(enqueued_at=T0 + timedelta(seconds=1))
        again = store.mark_enqueued("job-1", at=T0 + timedelta(seconds=2))
        assert again.enqueued_at == T0 + timedelta(seconds=1)
        assert store.get("job-1") == first
        store.create(make_job("job-2"))
        running = store.claim("job-2", lease_s=60)
        marked = store.mark_enqueued("job-2", at=T0 + timedelta(seconds=3))
        assert marked == running.with_changes(enqueued_at=T0 + timedelta(seconds=3))
        assert store.get("job-2") == marked

    def test_mark_enqueued_of_missing_job_raises_job_not_found(self, store: JobStore) -> None:
        with pytest.raises(JobNotFound):
            store.mark_enqueued("no-such-job", at=T0)

    def test_list_unenqueued_finds_old_queued_jobs_without_the_marker(
        self, store: JobStore
    ) -> None:
        """Only queued jobs with no enqueued_at created before the cutoff, oldest first,
        limited; a marked, running or finished job is never listed."""
        for i in range(3):
            store.create(make_job(f"lost-{i}", created_at=T0 + timedelta(seconds=i)))
        store.create(make_job("young", created_at=T0 + timedelta(seconds=10)))
        store.create(make_job("marked", created_at=T0))
        store.mark_enqueued("marked", at=T0)
        store.create(make_job("published", created_at=T0, enqueued_at=T0))
        store.create(make_job("running", created_at=T0))
        store.claim("running", lease_s=60)
        store.create(make_job("canceled", created_at=T0))
        store.transition("canceled", expected={JobStatus.QUEUED}, target=JobStatus.CANCELED)
        cutoff = T0 + timedelta(seconds=10)
        assert [j.id for j in store.list_unenqueued(created_before=cutoff, limit=10)] == [
            "lost-0",
            "lost-1",
            "lost-2",
        ]
        assert [j.id for j in store.list_unenqueued(created_before=cutoff, limit=2)] == [
            "lost-0",
            "lost-1",
        ]
        assert store.list_unenqueued(created_before=T0, limit=10) == []
        listed = store.list_unenqueued(created_before=cutoff, limit=1)[0]
        assert listed == store.get("lost-0")
