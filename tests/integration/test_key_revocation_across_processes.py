"""A key an API process verified and keeps in memory is refused on its very next request
once `txt2img-admin keys revoke` (another process) has returned: over Redis pub/sub where the
deployment has Redis, and through the marker beside a SQLite database where it has not."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.wiring import Services, build_services
from dal.settings import Settings
from tests.integration import redis_service

redis_url = redis_service.redis_url
redis_prefix = redis_service.redis_prefix

REPO_ROOT = Path(__file__).resolve().parents[2]


def settings_env(tmp_path: Path, redis: tuple[str, str] | None) -> dict[str, str]:
    env = {
        "APP_ENV": "local",
        "JOB_STORE": "sql",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'txt2img.sqlite3'}",
        "JOB_QUEUE": "memory",
        "BLOB_STORE": "memory",
        "OUTBOX_SWEEP_INTERVAL_S": "0",
    }
    if redis is not None:
        url, prefix = redis
        env |= {"REQUEST_CACHE": "redis", "REDIS_URL": url, "REDIS_KEY_PREFIX": prefix}
    return env


@pytest.fixture(params=["redis", "sqlite-marker"])
def api_process(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Services, dict[str, str]]]:
    """This test's process plays the API (its services built as `python -m api` builds
    them); the admin command runs as a process of its own on the same settings."""
    env = settings_env(tmp_path, (redis_url, redis_prefix) if request.param == "redis" else None)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    services = build_services(Settings())
    try:
        yield services, env
    finally:
        services.close()


def admin(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "api.admin_cli", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_a_kept_key_is_refused_once_the_admin_command_returns(
    api_process: tuple[Services, dict[str, str]],
) -> None:
    services, env = api_process
    created = admin(env, "keys", "create", "--owner", "carol").strip().splitlines()
    key_id, secret = created[0].split()[2], created[-1]
    assert services.keys.authenticate(secret) is not None
    # Kept: the next request needs no store read.
    assert services.keys.verified(secret) is not None
    admin(env, "keys", "revoke", key_id)
    assert services.keys.verified(secret) is None
    assert services.keys.authenticate(secret) is None
