"""The admin command sets and shows per-key quotas and weights, and sweeps the outbox only
where there is a broker to publish to."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.admin_cli import main
from api.api_keys import ApiKeyService
from dal.factory import build_stores
from dal.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(app_env="local", data_dir=tmp_path)


def test_keys_create_sets_quota_overrides_and_list_shows_them(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["keys", "create", "--owner", "alice", "--max-in-flight", "3", "--images-per-day", "0"]
    assert main(args, settings) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    _, store = build_stores(settings, [])
    principal = ApiKeyService(
        store, pepper=settings.api_key_pepper.get_secret_value()
    ).authenticate(secret)
    assert principal is not None
    assert (principal.max_in_flight, principal.images_per_day) == (3, 0)
    assert main(["keys", "create", "--owner", "bob"], settings) == 0
    capsys.readouterr()
    assert main(["keys", "list"], settings) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.split("\t")[4:6] == ["max_in_flight", "images_per_day"]
    cells = {row.split("\t")[1]: row.split("\t")[4:6] for row in rows}
    assert cells == {"alice": ["3", "unlimited"], "bob": ["default", "default"]}


@pytest.mark.parametrize("value", ["-1", "many"])
def test_keys_create_refuses_a_bad_quota(
    settings: Settings, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--owner", "alice", "--max-in-flight", value], settings)
    assert exited.value.code == 2
    assert "--max-in-flight" in capsys.readouterr().err
    assert main(["keys", "list"], settings) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1  # the header alone


def test_keys_create_sets_a_weight_and_list_shows_it(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """--weight N is stored on the key and carried by its Principal; the default is 1."""
    assert main(["keys", "create", "--owner", "alice", "--weight", "3"], settings) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    _, store = build_stores(settings, [])
    service = ApiKeyService(store, pepper=settings.api_key_pepper.get_secret_value())
    principal = service.authenticate(secret)
    assert principal is not None
    assert principal.weight == 3
    assert main(["keys", "create", "--owner", "bob"], settings) == 0
    bob_secret = capsys.readouterr().out.strip().splitlines()[-1]
    bob = service.authenticate(bob_secret)
    assert bob is not None
    assert bob.weight == 1
    assert main(["keys", "list"], settings) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.split("\t")[6] == "weight"
    weights = {row.split("\t")[1]: row.split("\t")[6] for row in rows}
    assert weights == {"alice": "3", "bob": "1"}


@pytest.mark.parametrize("value", ["0", "-2", "heavy"])
def test_keys_create_refuses_a_bad_weight(
    settings: Settings, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--owner", "alice", "--weight", value], settings)
    assert exited.value.code == 2
    assert "--weight" in capsys.readouterr().err
    assert main(["keys", "list"], settings) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1  # the header alone


def test_issue_refuses_a_weight_below_one(settings: Settings) -> None:
    _, store = build_stores(settings, [])
    service = ApiKeyService(store, pepper=settings.api_key_pepper.get_secret_value())
    with pytest.raises(ValueError, match="weight"):
        service.issue(owner="alice", weight=0)
    assert service.list_keys() == []


def test_outbox_sweep_needs_a_broker_queue(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The inline queue lives in the API process (which re-runs queued jobs at start)."""
    assert main(["outbox", "sweep", "--dry-run"], settings) == 2
    assert "JOB_QUEUE=pubsub or celery" in capsys.readouterr().err
