"""The `txt2img` CLI against the real service process, called in-process."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from api.cli import main
from tests.e2e.conftest import BOOTSTRAP_KEY, RunningService

UNKNOWN_JOB = "0" * 32


def _cli(service: RunningService, *args: str, key: str = BOOTSTRAP_KEY) -> int:
    return main(["--url", service.base_url, "--key", key, *args])


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_submit_wait_status_list_cancel(
    service: RunningService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _cli(
        service,
        "submit",
        "a lighthouse at dawn",
        "--width", "64", "--height", "64", "--steps", "2", "--guidance", "1", "--seed", "5",
        "--wait", "--out", str(tmp_path),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    job_id = lines[0]
    image = tmp_path / f"{job_id}-0.png"
    assert lines[1:] == [str(image)]
    assert _png_size(image) == (64, 64)
    assert "succeeded 100%" in captured.err  # stderr is not a TTY: plain percentage lines

    assert _cli(service, "status", job_id, "--json") == 0
    job = json.loads(capsys.readouterr().out)
    assert job["id"] == job_id
    assert job["status"] == "succeeded"
    assert job["params"]["seed"] == 5

    assert _cli(service, "list", "--limit", "50") == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["ID", "STATUS", "PROGRESS"]
    assert any(line.startswith(job_id) and "succeeded" in line for line in table.splitlines())

    assert _cli(service, "cancel", job_id) == 2
    assert "409 job-finished" in capsys.readouterr().err

    again = tmp_path / "again"
    assert _cli(service, "download", job_id, "--out", str(again)) == 0
    assert capsys.readouterr().out.splitlines() == [str(again / f"{job_id}-0.png")]
    assert _png_size(again / f"{job_id}-0.png") == (64, 64)


def test_bad_key_is_refused_without_echoing_it(
    service: RunningService, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_key = "not-a-real-key-9f8e7d6c5b4a"
    assert _cli(service, "status", UNKNOWN_JOB, key=bad_key) == 2
    captured = capsys.readouterr()
    assert "401 unauthenticated" in captured.err
    assert bad_key not in captured.out + captured.err


def test_unreachable_api_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:9", "--key", BOOTSTRAP_KEY, "list"]) == 3
    captured = capsys.readouterr()
    assert "cannot reach" in captured.err
    assert BOOTSTRAP_KEY not in captured.out + captured.err


def test_admin_key_create_authenticates(
    service: RunningService, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The admin commands read the service's settings from the environment.
    for name, value in service.env.items():
        monkeypatch.setenv(name, value)
    assert main(["admin", "keys", "create", "--owner", "cli-user"]) == 0
    output = capsys.readouterr().out
    assert "for owner cli-user" in output
    new_key = output.splitlines()[-1]

    assert _cli(service, "status", UNKNOWN_JOB, key=new_key) == 2
    captured = capsys.readouterr()
    assert "404 not-found" in captured.err
    assert new_key not in captured.out + captured.err
