"""`python -m emulators dev|selfhosted|down|services`.

- dev: the whole local cloud stack (emulators, Redis, worker, API); Ctrl-C stops what it started.
- selfhosted: Redis and PostgreSQL (started if not running), the Celery GPU worker and the API
  with APP_ENV=selfhosted; Ctrl-C stops the worker and the API (and a Redis started here).
- down: stop whatever a previous `dev` left running (from the pid files in .data/emulators).
- services: make sure the servers the test suite needs are up (Redis, PostgreSQL).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from emulators import postgres, redis
from emulators.process import DEFAULT_STATE_DIR, ServiceUnavailable, stop_recorded
from emulators.stack import StackConfig, start_stack


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def dev() -> int:
    config = StackConfig(
        api_port=_int_env("PORT") or 8080,
        worker_port=_int_env("WORKER_PORT"),
        pubsub_port=_int_env("PUBSUB_PORT"),
        firestore_port=_int_env("FIRESTORE_PORT"),
        gcs_port=_int_env("GCS_PORT"),
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        api_key=os.environ.get("BOOTSTRAP_API_KEY"),
        min_backoff_s=float(os.environ.get("PUBSUB_MIN_BACKOFF_S", "10")),
    )
    print("starting emulators, Redis, worker and API ...", flush=True)
    try:
        stack = start_stack(config)
    except ServiceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    env = stack.env
    print(
        "\n".join(
            [
                "",
                f"  API            {stack.api_url}   (docs: {stack.api_url}/docs)",
                f"  worker         {stack.worker_url}  (push endpoint /pubsub/push)",
                f"  Pub/Sub        {env['PUBSUB_EMULATOR_HOST']}",
                f"  Firestore      {env['FIRESTORE_EMULATOR_HOST']}",
                f"  Cloud Storage  {env['STORAGE_EMULATOR_HOST']}  bucket {env['GCS_BUCKET']}",
                f"  Redis          {env['REDIS_URL']}",
                f"  logs           {DEFAULT_STATE_DIR}/",
                "",
                f"  API key        {stack.api_key}",
                "",
                "Ctrl-C stops everything started here.",
            ]
        ),
        flush=True,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    print("stopping ...", flush=True)
    stack.stop()
    return 0


def selfhosted() -> int:
    from emulators.selfhosted import SelfhostedConfig, start_selfhosted

    model = os.environ.get("MODEL_PATH")
    config = SelfhostedConfig(
        api_port=_int_env("PORT") or 8080,
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        database_url=os.environ.get("DATABASE_URL") or None,
        api_key=os.environ.get("BOOTSTRAP_API_KEY"),
        model_path=Path(model) if model else None,
        data_dir=Path(os.environ.get("DATA_DIR") or ".data/selfhosted"),
        log_level=os.environ.get("LOG_LEVEL", "info"),
    )
    print("starting Redis, PostgreSQL, the Celery worker and the API ...", flush=True)
    try:
        stack = start_selfhosted(config)
    except ServiceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    env = stack.env
    queue = env.get("CELERY_QUEUE", "txt2img-jobs")
    print(
        "\n".join(
            [
                "",
                f"  API            {stack.api_url}   (docs: {stack.api_url}/docs)",
                f"  Celery worker  {stack.worker_name}  queue {queue}",
                f"  Redis          {env['REDIS_URL']}  (broker, limits, cache)",
                f"  PostgreSQL     {_without_password(stack.database_url)}",
                f"  images         {env['BLOB_DIR']}",
                f"  logs           {config.state_dir}/",
                "",
                f"  API key        {stack.api_key}",
                "",
                "  workers and tasks (with APP_ENV=selfhosted and the same REDIS_URL):",
                "    .venv/bin/celery -A gpu_worker.celery_worker:app inspect active",
                "",
                "Ctrl-C stops the worker and the API.",
            ]
        ),
        flush=True,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    print("stopping ...", flush=True)
    stack.stop()
    return 0


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def services() -> int:
    try:
        for service in (redis.ensure_running(), postgres.ensure_running()):
            state = "started" if service.started_here else "already running"
            print(f"{service.name} on {service.address}: {state}")
    except ServiceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators", description=__doc__)
    parser.add_argument("command", choices=["dev", "selfhosted", "down", "services"])
    args = parser.parse_args(argv)
    if args.command == "dev":
        return dev()
    if args.command == "selfhosted":
        return selfhosted()
    if args.command == "down":
        for name in stop_recorded(DEFAULT_STATE_DIR):
            print(f"stopped {name}")
        return 0
    return services()


if __name__ == "__main__":
    raise SystemExit(main())
