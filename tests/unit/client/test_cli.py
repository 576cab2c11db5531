"""The `txt2img` CLI's own rendering of a job, against a scripted service (the SDK under it
is tested beside this; the CLI against the real service in tests/e2e/test_cli.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api import cli
from tests.unit.client.fake_api import BASE_URL, JOB_ID, KEY, ScriptedApi, job_json
from txt2img_client import Client, Job

NOW = datetime(2026, 11, 27, 12, 0, 3, tzinfo=UTC)


def job(status: str = "queued", progress: float = 0.0, **place: Any) -> Job:
    return Job.from_dict(job_json(status=status, progress=progress, **place))


def in_line(position: int, seconds: float | None) -> Job:
    start = None if seconds is None else (NOW + timedelta(seconds=seconds)).isoformat()
    return job(queue_position=position, estimated_start_at=start)


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (22, "22nd"),
        (23, "23rd"),
        (101, "101st"),
        (111, "111th"),
        (112, "112th"),
    ],
)
def test_ordinal(number: int, text: str) -> None:
    assert cli.ordinal(number) == text


class TestStatusText:
    def test_a_waiting_job_counts_the_jobs_before_it(self) -> None:
        # Two jobs go first: it is third.
        assert cli.status_text(in_line(2, 11.6), NOW) == "queued: 3rd in line, about 12 s"

    def test_the_next_job(self) -> None:
        assert cli.status_text(in_line(0, 2.2), NOW) == "queued: next in line, about 2 s"

    def test_no_estimate_is_left_out(self) -> None:
        assert cli.status_text(in_line(1, None), NOW) == "queued: 2nd in line"

    def test_an_estimate_already_passed_is_no_negative_wait(self) -> None:
        assert cli.status_text(in_line(0, -30), NOW) == "queued: next in line, about 0 s"

    @pytest.mark.parametrize(
        ("record", "text"),
        [
            (job(), "queued"),  # an older service: no place in line
            (job(queue_position=None, estimated_start_at=None), "queued"),
            (job("running", 0.5), "running"),
            (job("succeeded", 1.0), "succeeded"),
        ],
    )
    def test_without_a_place_it_is_the_status(self, record: Job, text: str) -> None:
        assert cli.status_text(record, NOW) == text


class TestProgress:
    def test_a_log_gets_the_place_when_it_moves_then_the_percentages(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        progress = cli.Progress()
        assert not progress.tty  # pytest captures stderr
        for update in (
            in_line(1, None),
            in_line(1, None),
            in_line(0, None),
            job("running", 0.5),
            job("succeeded", 1.0),
        ):
            progress.show(update)
        progress.done()
        assert capsys.readouterr().err.splitlines() == [
            "queued: 2nd in line",
            "queued: next in line",
            "running 50%",
            "succeeded 100%",
        ]

    def test_a_terminal_line_is_redrawn_over_the_longer_one(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        progress = cli.Progress()
        progress.tty = True
        progress.show(in_line(2, None))
        progress.show(job("running", 0.5))
        progress.done()
        first, second = capsys.readouterr().err.rstrip("\n").split("\r")[1:]
        assert first.endswith("0% queued: 3rd in line")
        assert second.rstrip().endswith("50% running")
        assert len(second) == len(first)  # blanks what the longer line left


def test_the_status_command_shows_the_place(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = ScriptedApi(httpx.Response(200, json=job_json(queue_position=3)))
    monkeypatch.setattr(cli, "Client", lambda url, key: Client(url, key, transport=api.transport()))
    assert cli.main(["--url", BASE_URL, "--key", KEY, "status", JOB_ID]) == 0
    assert "status:     queued: 4th in line\n" in capsys.readouterr().out
