"""Per-owner quotas in the job service, on the in-memory adapters: what is refused, what is
counted, and that a refusal changes nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from api.job_service import GenerationDefaults, JobRequest, JobService
from api.quotas import QuotaLimits
from dal.errors import DailyImageQuotaExceeded, EnqueueFailed, InFlightQuotaExceeded, QuotaExceeded
from dal.finisher import JobFinisher
from dal.memory import MemoryJobQueue, MemoryJobStore, MemoryRequestCache
from dal.quota_rules import seconds_to_next_utc_day
from dal.records import JobStatus
from dal.request_keys import finished_request_key, idempotency_cache_key
from tests.contracts.job_store_contract import ManualClock

NOON = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC)


class Harness:
    def __init__(self) -> None:
        self.clock = ManualClock(NOON)
        self.jobs = MemoryJobStore(clock=self.clock)
        self.queue = MemoryJobQueue()
        self.cache = MemoryRequestCache()
        self.service = JobService(
            jobs=self.jobs,
            queue=self.queue,
            cache=self.cache,
            finisher=JobFinisher(self.jobs, clock=self.clock),
            model_id="m",
            defaults=GenerationDefaults(64, 64, 2, 1.0),
            clock=self.clock,
        )

    def submit(self, quota: QuotaLimits, *, images: int = 1, prompt: str = "p") -> str:
        request = JobRequest(prompt=prompt, num_images=images)
        return self.service.submit(owner="alice", request=request, quota=quota).job.id

    def count(self, owner: str = "alice") -> int:
        return len(self.jobs.list_by_owner(owner, limit=1000).items)


@pytest.fixture
def h() -> Harness:
    return Harness()


class TestLimits:
    def test_key_overrides_win_and_none_takes_the_default(self) -> None:
        defaults = QuotaLimits(max_in_flight=4, images_per_day=100)
        assert QuotaLimits.resolve(defaults, max_in_flight=None, images_per_day=0) == QuotaLimits(
            4, 0
        )
        assert QuotaLimits.resolve(defaults, max_in_flight=1, images_per_day=None) == (
            QuotaLimits(1, 100)
        )

    def test_seconds_to_the_next_utc_day(self) -> None:
        assert seconds_to_next_utc_day(NOON) == 12 * 3600
        assert seconds_to_next_utc_day(NOON.replace(hour=23, minute=59, second=59)) == 1
        assert seconds_to_next_utc_day(NOON.replace(hour=0, minute=0)) == 86_400


class TestInFlight:
    def test_the_job_past_the_limit_is_refused_and_nothing_is_recorded(self, h: Harness) -> None:
        quota = QuotaLimits(max_in_flight=2)
        first = h.submit(quota)
        h.submit(quota)
        with pytest.raises(InFlightQuotaExceeded) as refused:
            h.submit(quota)
        assert (refused.value.limit, refused.value.usage) == (2, 2)
        assert refused.value.retry_after_s > 0
        assert h.count() == 2
        assert len(h.queue.pending) == 2
        # Another owner has a budget of their own.
        h.service.submit(owner="bob", request=JobRequest(prompt="p"), quota=quota)
        # A finished job frees its place; running ones still count.
        h.jobs.claim(first, lease_s=60)
        with pytest.raises(InFlightQuotaExceeded):
            h.submit(quota)
        h.jobs.transition(first, expected={JobStatus.RUNNING}, target=JobStatus.SUCCEEDED)
        h.submit(quota)
        assert h.count() == 3

    def test_concurrent_submissions_in_one_process_never_overshoot(self, h: Harness) -> None:
        quota = QuotaLimits(max_in_flight=5)
        barrier = threading.Barrier(16)
        outcomes: list[str] = []

        def submit(i: int) -> None:
            barrier.wait(timeout=10)
            try:
                h.submit(quota, prompt=f"p{i}")
                outcomes.append("accepted")
            except QuotaExceeded:
                outcomes.append("refused")

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(outcomes) == ["accepted"] * 5 + ["refused"] * 11
        assert h.jobs.count_in_flight("alice") == 5


class TestImagesPerDay:
    def test_a_job_that_would_pass_the_limit_is_refused_until_the_next_utc_day(
        self, h: Harness
    ) -> None:
        quota = QuotaLimits(images_per_day=5)
        h.submit(quota, images=4)
        with pytest.raises(DailyImageQuotaExceeded) as refused:
            h.submit(quota, images=2)
        assert (refused.value.limit, refused.value.usage, refused.value.requested) == (5, 4, 2)
        assert refused.value.retry_after_s == 12 * 3600
        assert h.count() == 1
        h.submit(quota, images=1)
        with pytest.raises(DailyImageQuotaExceeded):
            h.submit(quota, images=1)
        h.clock.advance(12 * 3600)  # 00:00 UTC
        h.submit(quota, images=4)
        assert h.count() == 3

    def test_canceled_jobs_count_and_enqueue_failures_do_not(self, h: Harness) -> None:
        quota = QuotaLimits(images_per_day=4)
        canceled = h.submit(quota, images=2)
        h.service.cancel(owner="alice", job_id=canceled)
        h.queue.available = False
        with pytest.raises(EnqueueFailed):
            h.submit(quota, images=2)
        h.queue.available = True
        h.submit(quota, images=2)  # 2 canceled + 2: the failed enqueue was not charged
        with pytest.raises(DailyImageQuotaExceeded) as refused:
            h.submit(quota, images=1)
        assert refused.value.usage == 4

    def test_an_idempotent_replay_is_neither_refused_nor_charged(self, h: Harness) -> None:
        quota = QuotaLimits(max_in_flight=1, images_per_day=2)
        request = JobRequest(prompt="p", num_images=2)
        first = h.service.submit(owner="alice", request=request, idempotency_key="k", quota=quota)
        again = h.service.submit(owner="alice", request=request, idempotency_key="k", quota=quota)
        assert (again.job.id, again.created) == (first.job.id, False)
        assert h.count() == 1
        assert h.jobs.count_images_since("alice", NOON - timedelta(hours=12)) == 2

    def test_a_replay_the_cache_missed_is_answered_with_its_job_not_refused(
        self, h: Harness
    ) -> None:
        """The job store recognises the reused key before it checks the quota, so a replay at
        the limit is its job even when the request cache has lost (or never had) the key."""
        quota = QuotaLimits(max_in_flight=1)
        request = JobRequest(prompt="p")
        first = h.service.submit(owner="alice", request=request, idempotency_key="k", quota=quota)
        h.cache.delete(idempotency_cache_key("alice", "k"))
        again = h.service.submit(owner="alice", request=request, idempotency_key="k", quota=quota)
        assert (again.job.id, again.created) == (first.job.id, False)
        assert h.count() == 1
        with pytest.raises(InFlightQuotaExceeded):
            h.submit(quota, prompt="another")

    def test_a_deduplicated_request_is_neither_refused_nor_charged(self, h: Harness) -> None:
        quota = QuotaLimits(images_per_day=1)
        request = JobRequest(prompt="p", seed=7)
        done = h.service.submit(owner="alice", request=request, quota=quota).job
        h.jobs.claim(done.id, lease_s=60)
        h.jobs.transition(done.id, expected={JobStatus.RUNNING}, target=JobStatus.SUCCEEDED)
        h.cache.put(finished_request_key("alice", done.model, done.params), done.id, ttl_s=60)
        again = h.service.submit(owner="alice", request=request, quota=quota)
        assert (again.job.id, again.deduplicated) == (done.id, True)
        assert h.count() == 1
        with pytest.raises(DailyImageQuotaExceeded):
            h.submit(quota, prompt="another")
