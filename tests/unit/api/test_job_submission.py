"""Synchronous calls (the OpenAI and AUTOMATIC1111 dialects) on the in-memory services: a job
that ends is returned, one that outlasts SYNC_WAIT_MAX_S is named in StillRunning, and a caller
that hangs up gets its job canceled (unless SYNC_CANCEL_ON_DISCONNECT is off)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import pytest
from starlette.requests import Request

from api.job_service import JobRequest
from api.job_submission import CallerGone, StillRunning, run_to_completion
from dal.records import JobStatus
from tests.unit.api.conftest import ALICE_KEY, ApiHarness, make_settings


class Caller:
    """The parts of a Starlette request the wait reads: whether its client is still there."""

    def __init__(self, hangs_up_after_checks: int | None = None) -> None:
        self.checks = 0
        self.hangs_up_after = hangs_up_after_checks

    async def is_disconnected(self) -> bool:
        self.checks += 1
        return self.hangs_up_after is not None and self.checks > self.hangs_up_after


def principal(api: ApiHarness) -> Any:
    found = api.services.keys.authenticate(ALICE_KEY)
    assert found is not None
    return found


def call(api: ApiHarness, caller: Caller, **request: Any) -> Any:
    return asyncio.run(
        run_to_completion(
            api.services,
            principal(api),
            JobRequest(prompt="a lighthouse", **request),
            caller=cast(Request, caller),
        )
    )


@pytest.fixture
def settings() -> Any:
    return make_settings(sync_wait_max_s=2.0, prefer_wait_poll_s=0.05)


def test_a_job_that_ends_is_returned_finished(api: ApiHarness) -> None:
    worker = threading.Timer(0.2, api.run_pending_jobs)
    worker.start()
    job = call(api, Caller())
    worker.join()
    assert job.status == JobStatus.SUCCEEDED
    assert len(job.images) == 1


def test_a_job_that_outlasts_the_wait_is_named_and_keeps_running(api: ApiHarness) -> None:
    with pytest.raises(StillRunning) as still:
        call(api, Caller())
    assert still.value.waited_s == 2.0
    job = api.services.jobs.get(still.value.job.id)
    assert job.status == JobStatus.QUEUED  # not canceled: the caller may fetch it natively


def test_a_caller_that_hangs_up_gets_its_job_canceled(api: ApiHarness) -> None:
    with pytest.raises(CallerGone) as gone:
        call(api, Caller(hangs_up_after_checks=1))
    assert api.services.jobs.get(gone.value.job.id).status == JobStatus.CANCELED


def test_with_cancel_on_disconnect_off_the_job_keeps_its_place(api: ApiHarness) -> None:
    api.services.settings.sync_cancel_on_disconnect = False
    with pytest.raises(CallerGone) as gone:
        call(api, Caller(hangs_up_after_checks=1))
    assert api.services.jobs.get(gone.value.job.id).status == JobStatus.QUEUED
