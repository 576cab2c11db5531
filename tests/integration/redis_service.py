"""The Redis the integration tests use: `REDIS_URL` when set, else a local server on 6379
(started with emulators/redis.py if nothing answers there), database 15.

Tests never flush: each one works under its own key prefix (`unique_prefix`) and deletes
what it wrote. Bind a fixture into a test module with `redis_url = redis_service.redis_url`
(an import would read as an unused name to the linters).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from emulators import redis as redis_emulator
from emulators.process import ServiceUnavailable
from tests.integration.availability import missing

TEST_DB = 15


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    from dal.redis.client import make_redis_client

    url = os.environ.get("REDIS_URL")
    if url:
        client = make_redis_client(url)
        try:
            client.ping()
        except Exception as exc:
            missing(f"Redis at REDIS_URL ({exc})", "start it, or unset REDIS_URL")
        finally:
            client.close()
        yield url
        return
    try:
        service = redis_emulator.ensure_running(redis_emulator.DEFAULT_PORT)
    except ServiceUnavailable as exc:
        missing("Redis", str(exc))
    try:
        yield f"redis://{service.host}:{service.port}/{TEST_DB}"
    finally:
        redis_emulator.stop(service)


def unique_prefix() -> str:
    """A key prefix no other test (or run) uses."""
    return f"txt2img-test:{uuid.uuid4().hex}:"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """This test's key prefix on the Redis at `redis_url`; its keys are deleted afterwards."""
    from dal.redis.client import make_redis_client

    prefix = unique_prefix()
    yield prefix
    client = make_redis_client(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
