"""Readiness of the pipeline process (EngineProcess.check_ready): not ready while the last
start failed, once children keep dying, before the first start and after close; a single death
is survived. The bookkeeping runs on a stepped clock; no model and no torch here."""

from __future__ import annotations

from pathlib import Path

import pytest

from dal.errors import GenerationError, GeneratorUnavailable
from gpu_worker.engine_process import ChildHealth, EngineConfig, EngineProcess


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reason(health: ChildHealth | EngineProcess) -> str | None:
    """Why it is not ready, or None when it is."""
    try:
        health.check() if isinstance(health, ChildHealth) else health.check_ready()
    except GeneratorUnavailable as exc:
        return exc.reason
    return None


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def health(clock: SteppedClock) -> ChildHealth:
    """With the defaults: 3 deaths within 300 s."""
    health = ChildHealth(clock=clock)
    health.record_start()
    return health


class TestChildHealth:
    def test_a_started_child_is_ready(self, health: ChildHealth) -> None:
        assert reason(health) is None

    def test_not_ready_before_the_first_start(self, clock: SteppedClock) -> None:
        assert reason(ChildHealth(clock=clock)) == "the pipeline process has not started yet"

    def test_a_failed_start_is_not_ready_until_a_later_start_succeeds(
        self, health: ChildHealth, clock: SteppedClock
    ) -> None:
        health.record_start_failure("the pipeline process exited while starting (exit code 1)")
        clock.now += 42
        assert reason(health) == (
            "the pipeline process failed to start 42 s ago: "
            "the pipeline process exited while starting (exit code 1)"
        )
        clock.now += 3600
        assert reason(health) is not None  # time alone does not mend it
        health.record_start()
        assert reason(health) is None

    def test_deaths_below_the_limit_are_survived(
        self, health: ChildHealth, clock: SteppedClock
    ) -> None:
        for _ in range(2):
            health.record_crash()
            clock.now += 1
        assert reason(health) is None

    def test_the_limit_within_the_window_is_not_ready_until_the_window_passes(
        self, health: ChildHealth, clock: SteppedClock
    ) -> None:
        for _ in range(3):
            health.record_crash()
            clock.now += 60
        assert reason(health) == "the pipeline process crashed 3 times in the last 5 minutes"
        clock.now += 120  # the first death is now 300 s old
        assert reason(health) is None

    def test_deaths_spread_wider_than_the_window_are_survived(
        self, health: ChildHealth, clock: SteppedClock
    ) -> None:
        for _ in range(5):
            health.record_crash()
            clock.now += 200
        assert reason(health) is None

    def test_closed_is_not_ready(self, health: ChildHealth) -> None:
        health.record_close()
        assert reason(health) == "the pipeline process was stopped"

    def test_a_window_that_is_not_whole_minutes_reads_in_seconds(self, clock: SteppedClock) -> None:
        health = ChildHealth(crash_limit=1, crash_window_s=90.0, clock=clock)
        health.record_start()
        health.record_crash()
        assert reason(health) == "the pipeline process crashed once in the last 90 s"

    def test_the_limit_is_at_least_one(self) -> None:
        with pytest.raises(ValueError):
            ChildHealth(crash_limit=0)


class TestEngineProcessWithoutAModel:
    def test_not_ready_before_it_starts(self, tmp_path: Path) -> None:
        process = EngineProcess(EngineConfig(model_path=tmp_path))
        assert reason(process) == "the pipeline process has not started yet"
        assert process.pid is None  # checking started nothing

    def test_a_child_that_does_not_start_in_time_makes_it_unready(
        self, tmp_path: Path, clock: SteppedClock
    ) -> None:
        """The child is given no time to load anything: its start fails, and check_ready
        says so with the start's own reason."""
        process = EngineProcess(EngineConfig(model_path=tmp_path), start_timeout_s=0, clock=clock)
        with pytest.raises(GenerationError) as raised:
            process.start()
        assert raised.value.code == "engine_unavailable"
        assert reason(process) == f"the pipeline process failed to start 0 s ago: {raised.value}"
        assert process.pid is None

    def test_closed_it_is_not_ready_and_starts_nothing(self, tmp_path: Path) -> None:
        process = EngineProcess(EngineConfig(model_path=tmp_path))
        process.close()
        assert reason(process) == "the pipeline process was stopped"
        with pytest.raises(GenerationError) as raised:
            process.start()
        assert raised.value.code == "shutting_down" and raised.value.retryable
        assert process.pid is None
