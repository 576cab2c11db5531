"""The JobEvents contract: every subscriber hears the ids of jobs published after it
subscribed, until it stops. Run against each adapter (memory here, Redis on a real server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from dal.ports import JobEvents


class Heard:
    """A subscriber that remembers what it heard, and can wait for it."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, job_id: str) -> None:
        with self._changed:
            self.ids.append(job_id)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[str]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.ids) >= count, timeout)
            return list(self.ids)


class JobEventsContract:
    """Subclasses provide an `events` fixture: a fresh bus on its own channel."""

    @pytest.fixture
    def events(self) -> JobEvents:
        raise NotImplementedError

    @pytest.fixture
    def subscriptions(self) -> Iterator[list[Callable[[], None]]]:
        stops: list[Callable[[], None]] = []
        yield stops
        for stop in stops:
            stop()

    def test_a_subscriber_hears_jobs_published_after_it_subscribed(
        self, events: JobEvents, subscriptions: list[Callable[[], None]]
    ) -> None:
        heard = Heard()
        subscriptions.append(events.subscribe(heard))
        events.publish_finished("job-1")
        events.publish_finished("job-2")
        assert heard.wait_for(2) == ["job-1", "job-2"]

    def test_every_subscriber_hears_every_job(
        self, events: JobEvents, subscriptions: list[Callable[[], None]]
    ) -> None:
        """Two API processes, each subscribed: both wake their waiters."""
        first, second = Heard(), Heard()
        subscriptions.append(events.subscribe(first))
        subscriptions.append(events.subscribe(second))
        events.publish_finished("job-1")
        assert first.wait_for(1) == second.wait_for(1) == ["job-1"]

    def test_a_stopped_subscriber_hears_nothing_more(
        self, events: JobEvents, subscriptions: list[Callable[[], None]]
    ) -> None:
        stopped, staying = Heard(), Heard()
        stop = events.subscribe(stopped)
        subscriptions.append(events.subscribe(staying))
        events.publish_finished("before")
        assert stopped.wait_for(1) == ["before"]
        stop()
        events.publish_finished("after")
        assert staying.wait_for(2) == ["before", "after"]
        time.sleep(0.2)
        assert stopped.ids == ["before"]

    def test_publishing_with_nobody_listening_is_fine(self, events: JobEvents) -> None:
        events.publish_finished("unheard")

    def test_a_failing_subscriber_does_not_silence_the_bus(
        self, events: JobEvents, subscriptions: list[Callable[[], None]]
    ) -> None:
        def broken(job_id: str) -> None:
            raise RuntimeError("subscriber bug")

        heard = Heard()
        subscriptions.append(events.subscribe(broken))
        subscriptions.append(events.subscribe(heard))
        events.publish_finished("job-1")
        events.publish_finished("job-2")
        assert heard.wait_for(2) == ["job-1", "job-2"]
