"""The fair dispatcher (dal/dispatcher.py) on in-memory adapters and one manual clock: jobs are
handed to the queue within the capacity, in fair order, every ending frees its slot, and what a
process dying halfway leaves behind is put right by another's sweep pass."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from api.job_service import GenerationDefaults, JobRequest, JobService
from api.outbox_sweeper import OutboxSweeper
from dal.core import build_core
from dal.dispatcher import Dispatcher
from dal.errors import FailpointTriggered, StoreUnavailable
from dal.failpoints import Failpoints
from dal.finisher import JobFinisher
from dal.memory import MemoryFairLine, MemoryJobQueue, MemoryJobStore, MemoryRequestCache
from dal.ports import HandedOver, LineDepth, LinePlace, Ticket
from dal.records import ImageRef, Job, JobError, JobStatus
from dal.settings import Settings
from tests.contracts.job_store_contract import ManualClock, make_job

GRACE_S = 60


class Fleet:
    """One job store, one line and one queue, shared by any number of API 'instances'
    (a dispatcher, a finisher and a job service each), and a GPU that runs one job at a time
    off the queue."""

    def __init__(self, capacity: int = 4) -> None:
        self.clock = ManualClock()
        self.jobs = MemoryJobStore(clock=self.clock)
        self.line = MemoryFairLine(clock=lambda: self.clock().timestamp())
        self.queue = MemoryJobQueue()
        self.capacity = capacity
        self.published: Counter[str] = Counter()
        self.started: list[str] = []
        self.inboxes: list[str] = []
        self.instance = self.new_instance()

    def new_instance(self, failpoints: Failpoints | None = None) -> Instance:
        return Instance(self, failpoints)

    def gpu_runs(self, count: int | None = None, instance: Instance | None = None) -> int:
        """Run up to `count` published jobs (all of them by default), in publish order; each
        ends through `instance`'s finisher, whose handler frees the slot."""
        finisher = (instance or self.instance).finisher
        ran = 0
        while count is None or ran < count:
            self.inboxes += self.queue.take_all()
            if not self.inboxes:
                return ran
            job_id = self.inboxes.pop(0)
            self.published[job_id] += 1
            if self.jobs.get(job_id).status != JobStatus.QUEUED:
                continue  # a duplicate delivery, or canceled: acknowledged
            self.jobs.claim(job_id, lease_s=30)
            self.started.append(job_id)
            finisher.succeed(job_id, (ImageRef(f"images/{job_id}/0.png", 64, 64, 1),))
            ran += 1
        return ran


class Instance:
    def __init__(self, fleet: Fleet, failpoints: Failpoints | None) -> None:
        self.finisher = JobFinisher(fleet.jobs, clock=fleet.clock)
        self.dispatcher = Dispatcher(
            fleet.jobs,
            fleet.queue,
            fleet.line,
            capacity=fleet.capacity,
            grace_s=GRACE_S,
            clock=fleet.clock,
            failpoints=failpoints,
        )
        self.finisher.add_handler("dispatch", self.dispatcher.ended)
        self.service = JobService(
            jobs=fleet.jobs,
            queue=fleet.queue,
            cache=MemoryRequestCache(),
            finisher=self.finisher,
            model_id="m",
            defaults=GenerationDefaults(64, 64, 2, 1.0),
            clock=fleet.clock,
            dispatcher=self.dispatcher,
        )
        self.sweeper = OutboxSweeper(
            fleet.jobs,
            fleet.queue,
            self.finisher,
            grace_s=GRACE_S,
            give_up_s=900,
            clock=fleet.clock,
            dispatcher=self.dispatcher,
        )

    def submit(
        self, owner: str, count: int = 1, *, weight: float = 1, images: int = 1
    ) -> list[str]:
        return [
            self.service.submit(
                owner=owner, request=JobRequest(prompt="p", num_images=images), weight=weight
            ).job.id
            for _ in range(count)
        ]


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


def test_an_idle_service_hands_a_job_over_in_the_submit_itself(fleet: Fleet) -> None:
    (job_id,) = fleet.instance.submit("alice")
    job = fleet.jobs.get(job_id)
    assert job.enqueued_at is not None  # published and marked before the 202
    assert fleet.queue.take_all() == [job_id]
    assert fleet.instance.dispatcher.place(job).position == 0  # type: ignore[union-attr]


def test_a_newcomer_starts_after_at_most_the_capacity_of_a_backlog(fleet: Fleet) -> None:
    """One key submits 40 jobs, then another one: first come, first served starts it 41st."""
    alice = fleet.instance.submit("alice", 40)
    (bob,) = fleet.instance.submit("bob")
    assert fleet.jobs.get(bob).enqueued_at is None  # waiting, not published
    fleet.gpu_runs()
    assert sorted(fleet.started) == sorted([*alice, bob])
    assert fleet.started.index(bob) <= fleet.capacity
    assert fleet.line.depth() == LineDepth(0, 0, fleet.line.depth().ends_per_s)


def test_weights_share_the_gpus_in_their_ratio(fleet: Fleet) -> None:
    gold = fleet.instance.submit("gold", 40, weight=2)
    basic = fleet.instance.submit("basic", 40)
    fleet.gpu_runs(60)
    window = fleet.started[fleet.capacity : 60]  # after the first capacity, handed over at once
    counts = Counter("gold" if j in gold else "basic" for j in window)
    assert abs(counts["gold"] / counts["basic"] - 2) <= 0.2, counts
    assert set(window) <= set(gold) | set(basic)


def test_cancel_before_hand_over_never_reaches_a_gpu(fleet: Fleet) -> None:
    fleet.instance.submit("alice", fleet.capacity)
    (waiting,) = fleet.instance.submit("bob")
    fleet.instance.service.cancel(owner="bob", job_id=waiting)
    assert fleet.line.place(waiting) is None
    fleet.gpu_runs()
    assert waiting not in fleet.published
    assert fleet.jobs.get(waiting).status == JobStatus.CANCELED


def test_every_ending_frees_its_slot(fleet: Fleet) -> None:
    ids = fleet.instance.submit("alice", 6)
    finisher = fleet.instance.finisher
    fleet.jobs.claim(ids[0], lease_s=30)
    finisher.fail(ids[0], fleet_error())
    fleet.jobs.claim(ids[1], lease_s=30)
    finisher.cancel(ids[1])
    assert fleet.line.depth().handed_over == fleet.capacity  # refilled from the waiting two
    finisher.cancel(ids[2])  # handed over, not yet running: nothing left to refill from
    assert fleet.line.depth().handed_over == fleet.capacity - 1
    fleet.gpu_runs()
    assert fleet.line.depth().handed_over == 0 and fleet.line.depth().waiting == 0


def fleet_error() -> JobError:
    return JobError("generation_failed", "boom")


def test_a_failed_publish_is_left_to_the_sweeper_after_its_grace(fleet: Fleet) -> None:
    first = fleet.instance.submit("alice", fleet.capacity)
    waiting = fleet.instance.submit("alice", 2)
    fleet.queue.available = False
    fleet.jobs.claim(first[0], lease_s=30)
    fleet.instance.finisher.succeed(first[0], ())  # frees a slot: the publish fails
    stranded = waiting[0]
    assert fleet.line.place(stranded) is None and fleet.jobs.get(stranded).enqueued_at is None
    fleet.queue.available = True
    fleet.clock.advance(GRACE_S / 2)
    assert fleet.instance.sweeper.sweep() == []  # its publisher may still be at work
    fleet.clock.advance(GRACE_S)
    swept = fleet.instance.sweeper.sweep()
    assert [(r.job_id, r.action) for r in swept] == [(stranded, "enqueued")]  # not waiting[1]
    assert fleet.jobs.get(stranded).enqueued_at is not None
    assert fleet.line.place(waiting[1]) is not None


def test_an_instance_killed_mid_dispatch_loses_no_job_and_runs_none_twice(fleet: Fleet) -> None:
    """Instance 1 takes jobs from the line and dies before publishing them; instance 2 goes
    on. After the grace period its sweep publishes the stranded jobs; every job runs once and
    the capacity count is back to zero when the queue drains."""
    dying = fleet.new_instance(Failpoints({"after_hand_over": "error"}))
    survivor = fleet.instance
    ids = survivor.submit("alice", 10) + survivor.submit("bob", 10)
    fleet.gpu_runs(2, instance=dying)  # each ending hands the next over, then "dies"
    assert fleet.line.depth().handed_over == fleet.capacity
    fleet.gpu_runs(instance=survivor)
    unpublished = [j for j in ids if fleet.jobs.get(j).status == JobStatus.QUEUED]
    assert len(unpublished) == 2 and len(fleet.started) == 18  # the two it took and dropped
    fleet.clock.advance(GRACE_S + 1)
    survivor.sweeper.sweep()
    fleet.gpu_runs(instance=survivor)
    assert all(fleet.jobs.get(j).status == JobStatus.SUCCEEDED for j in ids)
    assert Counter(fleet.started) == Counter(ids)  # each ran exactly once
    assert all(fleet.jobs.get(j).attempts == 1 for j in ids)
    depth = fleet.line.depth()
    assert (depth.waiting, depth.handed_over) == (0, 0)


def test_reconcile_frees_slots_whose_release_was_lost(fleet: Fleet) -> None:
    ids = fleet.instance.submit("alice", fleet.capacity + 1)
    fleet.jobs.claim(ids[0], lease_s=30)
    JobFinisher(fleet.jobs, clock=fleet.clock).succeed(ids[0], ())  # no dispatch handler
    assert fleet.line.depth().handed_over == fleet.capacity
    assert fleet.instance.dispatcher.reconcile().freed == 0  # within the grace period
    fleet.clock.advance(GRACE_S + 1)
    result = fleet.instance.dispatcher.reconcile()
    assert (result.freed, result.handed_over) == (1, 1)
    assert fleet.jobs.get(ids[-1]).enqueued_at is not None


def test_a_line_that_lost_its_state_is_rebuilt_from_the_store(fleet: Fleet) -> None:
    fleet.instance.dispatcher.reconcile()  # the first pass restores a new line
    handed = fleet.instance.submit("alice", fleet.capacity)
    waiting = fleet.instance.submit("alice", 3)
    fleet.clock.advance(1)  # the store lists jobs oldest first: bob's is the newest
    waiting += fleet.instance.submit("bob", 1)
    fleet.line = MemoryFairLine(clock=lambda: fleet.clock().timestamp())  # Redis restarted
    after = fleet.new_instance()
    assert after.dispatcher.reconcile().restored is True
    depth = fleet.line.depth()
    assert (depth.waiting, depth.handed_over) == (len(waiting), len(handed))
    assert fleet.line.place(waiting[-1]).position == 1  # type: ignore[union-attr]
    fleet.gpu_runs(instance=after)
    assert sorted(fleet.started) == sorted(handed + waiting)


def test_place_counts_the_jobs_ahead_and_estimates_from_throughput(fleet: Fleet) -> None:
    fleet.instance.submit("alice", fleet.capacity + 5)
    (watched,) = fleet.instance.submit("alice")
    dispatcher = fleet.instance.dispatcher
    place = dispatcher.place(fleet.jobs.get(watched))
    assert place is not None and (place.position, place.estimated_start_at) == (5, None)
    for _ in range(4):
        fleet.clock.advance(2)
        fleet.gpu_runs(1)
    place = dispatcher.place(fleet.jobs.get(watched))
    assert place is not None and place.position == 1
    # 3 intervals in the 6 s since the first ending: 0.5 jobs/s; 2 slots to free up.
    assert place.estimated_start_at == fleet.clock() + timedelta(seconds=4)
    fleet.gpu_runs()
    assert dispatcher.place(fleet.jobs.get(watched)) is None  # succeeded


class CountingLine(MemoryFairLine):
    """Counts the reads of places, as a Redis line would count round trips."""

    reads = 0

    def place(self, job_id: str) -> LinePlace | None:
        self.reads += 1
        return super().place(job_id)

    def places(self, job_ids: Sequence[str]) -> dict[str, LinePlace]:
        self.reads += 1
        return super().places(job_ids)


def test_the_places_of_a_page_are_its_jobs_places_read_at_once(fleet: Fleet) -> None:
    fleet.line = line = CountingLine(clock=lambda: fleet.clock().timestamp())
    instance = fleet.new_instance()
    ids = instance.submit("alice", fleet.capacity + 5)
    for _ in range(2):  # two endings: the waiting jobs' places carry an estimate
        fleet.clock.advance(2)
        fleet.gpu_runs(1, instance=instance)
    instance.service.cancel(owner="alice", job_id=ids[-1])
    page = fleet.jobs.list_by_owner("alice", limit=20).items
    assert Counter(job.status for job in page) == {"queued": 6, "succeeded": 2, "canceled": 1}
    dispatcher = instance.dispatcher
    line.reads = 0
    places = dispatcher.places(page)
    assert line.reads == 1
    assert places == {job.id: p for job in page if (p := dispatcher.place(job)) is not None}
    assert sorted(p.position for p in places.values()) == [0, 0, 0, 0, 0, 1]
    assert sum(p.estimated_start_at is not None for p in places.values()) == 2
    line.reads = 0
    assert dispatcher.places([job for job in page if job.status != JobStatus.QUEUED]) == {}
    assert dispatcher.places([]) == {}
    assert line.reads == 0


class DownLine(MemoryFairLine):
    def admit(self, ticket: Ticket, *, capacity: int) -> list[HandedOver]:
        raise StoreUnavailable("line down")

    def place(self, job_id: str) -> LinePlace | None:
        raise StoreUnavailable("line down")

    def places(self, job_ids: Sequence[str]) -> dict[str, LinePlace]:
        raise StoreUnavailable("line down")


def test_with_the_line_down_jobs_go_straight_to_the_queue(fleet: Fleet) -> None:
    fleet.line = DownLine()
    instance = fleet.new_instance()
    ids = instance.submit("alice", fleet.capacity + 2)
    assert fleet.queue.take_all() == ids
    assert instance.dispatcher.place(fleet.jobs.get(ids[-1])) is None
    assert instance.dispatcher.places([fleet.jobs.get(job_id) for job_id in ids]) == {}


def test_dying_after_hand_over_in_a_submit_leaves_the_job_to_the_sweeper(fleet: Fleet) -> None:
    dying = fleet.new_instance(Failpoints({"after_hand_over": "error"}))
    with pytest.raises(FailpointTriggered):
        dying.submit("alice")
    assert len(fleet.jobs.list_by_owner("alice", limit=5).items) == 1
    assert fleet.queue.take_all() == []
    fleet.clock.advance(GRACE_S + 1)
    assert [r.action for r in fleet.instance.sweeper.sweep()] == ["enqueued"]
    assert fleet.gpu_runs() == 1
    assert fleet.line.depth().handed_over == 0


class FastWorkerQueue(MemoryJobQueue):
    """A worker that ends a job before its publisher has marked it."""

    def __init__(self, jobs: MemoryJobStore, finisher: JobFinisher) -> None:
        super().__init__()
        self.jobs, self.finisher = jobs, finisher

    def enqueue(self, job: Job) -> None:
        super().enqueue(job)
        self.jobs.claim(job.id, lease_s=30)
        self.finisher.succeed(job.id, ())


def test_a_submit_answers_with_the_job_as_admitted_even_if_it_already_ended(
    fleet: Fleet,
) -> None:
    fleet.queue = FastWorkerQueue(fleet.jobs, fleet.instance.finisher)
    submitted = fleet.new_instance().service.submit(owner="alice", request=JobRequest(prompt="p"))
    assert submitted.created and submitted.job.status == JobStatus.QUEUED
    assert fleet.jobs.get(submitted.job.id).status == JobStatus.SUCCEEDED


class StaleListing(MemoryJobStore):
    """Lists unpublished jobs as they were when a sweep pass began."""

    stale: list[Job]

    def list_unenqueued(self, *, created_before: datetime, limit: int) -> list[Job]:
        return self.stale


def test_the_sweeper_leaves_a_job_that_ran_since_its_listing(fleet: Fleet) -> None:
    fleet.jobs = StaleListing(clock=fleet.clock)
    instance = fleet.new_instance()
    (job_id,) = instance.submit("alice")
    fleet.jobs.stale = [replace(fleet.jobs.get(job_id), enqueued_at=None)]
    fleet.gpu_runs(instance=instance)
    fleet.clock.advance(GRACE_S + 1)
    assert [r.action for r in instance.sweeper.sweep()] == ["skipped"]
    assert fleet.queue.take_all() == []
    assert fleet.line.depth().handed_over == 0


def test_the_slot_is_free_before_anyone_hears_of_the_ending(tmp_path: Path) -> None:
    """A client woken by the ending may submit its next job at once: the line must already
    count the slot free, or that job would wait behind its own predecessor."""
    core = build_core(Settings(app_env="test", data_dir=tmp_path, dispatch_capacity=1))
    seen: list[int] = []
    core.finisher.add_handler("waiters", lambda job: seen.append(core.line.depth().handed_over))
    dispatcher = core.build_dispatcher(MemoryJobQueue())
    try:
        job = core.jobs.create(make_job("j1"))
        dispatcher.admit(job)
        core.jobs.claim("j1", lease_s=30)
        core.finisher.succeed("j1", ())
        assert seen == [0]
    finally:
        core.close()
