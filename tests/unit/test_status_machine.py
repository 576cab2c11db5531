"""The job status machine and JobParams' per-image seeds."""

from __future__ import annotations

import pytest

from dal.records import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    JobParams,
    JobStatus,
    can_transition,
)

Q, R, S, F, C = (
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELED,
)

# queued → running → succeeded | failed | canceled; queued → canceled | failed; running →
# queued when a failed attempt is released for a retry.
DOCUMENTED = {(Q, R), (Q, C), (Q, F), (R, S), (R, F), (R, C), (R, Q)}


def params(seed: int, num_images: int = 1) -> JobParams:
    return JobParams(
        prompt="p",
        width=64,
        height=64,
        num_inference_steps=2,
        guidance_scale=1.0,
        seed=seed,
        num_images=num_images,
    )


def test_allowed_transitions_are_exactly_the_documented_ones() -> None:
    """The table allows the documented transitions and no other, for every status."""
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)
    table = {(a, b) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets}
    assert table == DOCUMENTED


@pytest.mark.parametrize("current", list(JobStatus))
@pytest.mark.parametrize("target", list(JobStatus))
def test_can_transition_agrees_with_the_documented_transitions(
    current: JobStatus, target: JobStatus
) -> None:
    """can_transition answers yes exactly for the documented pairs."""
    assert can_transition(current, target) is ((current, target) in DOCUMENTED)


def test_terminal_statuses_have_no_transitions() -> None:
    """Succeeded, failed and canceled are terminal and lead nowhere."""
    assert frozenset({S, F, C}) == TERMINAL_STATUSES
    for status in JobStatus:
        assert status.is_terminal is (status in TERMINAL_STATUSES)
        assert (not ALLOWED_TRANSITIONS[status]) is status.is_terminal


def test_only_a_running_job_returns_to_queued_and_nothing_to_itself() -> None:
    """Only a released attempt goes back to queued, and no status transitions to itself."""
    for status, targets in ALLOWED_TRANSITIONS.items():
        assert (Q in targets) is (status == R)
        assert status not in targets


def test_image_seeds_count_up_from_the_seed() -> None:
    """Image i of a job uses seed + i."""
    assert params(42).image_seeds() == (42,)
    assert params(42, num_images=4).image_seeds() == (42, 43, 44, 45)


def test_image_seeds_wrap_at_2_to_the_32() -> None:
    """Seeds stay in [0, 2**32): the ones past the top wrap around to 0."""
    assert params(2**32 - 2, num_images=4).image_seeds() == (2**32 - 2, 2**32 - 1, 0, 1)
    assert params(2**32 - 1).image_seeds() == (2**32 - 1,)
    assert all(0 <= s < 2**32 for s in params(2**32 - 3, num_images=8).image_seeds())


def test_params_round_trip_through_dict() -> None:
    """to_dict/from_dict keep every field, negative_prompt None or not."""
    for negative in (None, "blurry"):
        original = JobParams(
            prompt="a cat",
            negative_prompt=negative,
            width=512,
            height=768,
            num_inference_steps=25,
            guidance_scale=6.5,
            seed=2**32 - 1,
            num_images=3,
        )
        assert JobParams.from_dict(original.to_dict()) == original
