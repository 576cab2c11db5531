"""The self-hosted stack: Redis and PostgreSQL (started if not running, database created if
missing), then the Celery GPU worker and the API as separate processes with
APP_ENV=selfhosted. Used by `make run-selfhosted` (`python -m emulators selfhosted`) and by the
e2e tests in tests/e2e/test_selfhosted_stack.py.

Redis and PostgreSQL are system services here: they stay up after the stack stops. The worker
has no HTTP port; it counts as ready once it answers a Celery ping under its own node name
(the model is loaded and warmed before it starts consuming).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from emulators import postgres, redis
from emulators.process import (
    DEFAULT_STATE_DIR,
    Service,
    free_port,
    start_process,
    stop_service,
)
from emulators.stack import REPO_ROOT, _redis_address, _start_app, ensure_tiny_model

__all__ = ["REPO_ROOT", "SelfhostedConfig", "SelfhostedStack", "start_selfhosted"]

WORKER_READY_TIMEOUT_S = 180.0


@dataclass
class SelfhostedConfig:
    api_port: int | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    # DATABASE_URL to use as is; None: PostgreSQL on postgres_host:postgres_port, database
    # `database` (created if missing).
    database_url: str | None = None
    postgres_host: str = postgres.DEFAULT_HOST
    postgres_port: int = postgres.DEFAULT_PORT
    database: str = "txt2img"
    drop_database_on_stop: bool = False
    api_key: str | None = None
    # REDIS_KEY_PREFIX (rate limits, request cache, and Celery's keys under PREFIX + "celery:");
    # None: the settings' default.
    redis_key_prefix: str | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    data_dir: Path = Path(".data/selfhosted")
    model_path: Path | None = None
    # Extra environment for both processes (e.g. short timeouts in tests).
    extra_env: dict[str, str] = field(default_factory=dict)
    log_level: str = "info"


@dataclass
class SelfhostedStack:
    config: SelfhostedConfig
    env: dict[str, str]
    api_url: str
    api_key: str
    database_url: str
    worker_name: str
    services: list[Service] = field(default_factory=list)
    worker: Service | None = None
    api: Service | None = None
    _created_database: str | None = None

    def stop(self) -> None:
        for service in [self.api, self.worker, *reversed(self.services)]:
            if service is not None:
                stop_service(service)
        self.api = self.worker = None
        self.services.clear()
        if self._created_database and self.config.drop_database_on_stop:
            admin_url = postgres.with_database(self.database_url, "postgres")
            with contextlib.suppress(Exception):
                postgres.drop_database(admin_url, self._created_database)
            self._created_database = None

    def start_worker(self, extra_env: dict[str, str] | None = None) -> Service:
        """Start the Celery worker (again), optionally with changed settings."""
        self.env.update(extra_env or {})
        self.worker = _start_worker(
            self.env, self.worker_name, self.config.state_dir, log_id=int(self.env["PORT"])
        )
        return self.worker

    def restart_worker(self, extra_env: dict[str, str] | None = None) -> Service:
        """Stop the worker (SIGTERM: warm shutdown, running tasks finish) and start it again."""
        if self.worker is not None:
            stop_service(self.worker)
        return self.start_worker(extra_env)

    def kill_worker(self) -> None:
        """SIGKILL the worker: no shutdown, its unacknowledged tasks stay with the broker."""
        if self.worker is None or self.worker.pid is None:
            return
        pid = self.worker.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.worker = None

    def celery_app(self) -> Any:
        """A Celery app on the stack's broker and queue (send tasks by name, inspect)."""
        from dal.celery import make_celery_app

        return make_celery_app(settings_from_env(self.env))


def settings_from_env(env: dict[str, str]) -> Any:
    """The settings a process started with `env` reads (environment entries override)."""
    from dal.settings import Settings

    fields = Settings.model_fields
    values: dict[str, Any] = {k.lower(): v for k, v in env.items() if k.lower() in fields and v}
    return Settings(**values)


def start_selfhosted(config: SelfhostedConfig) -> SelfhostedStack:
    started: list[Service] = []
    created: list[str] = []
    try:
        return _start(config, started, created)
    except BaseException:
        for service in reversed(started):
            stop_service(service)
        if created and config.drop_database_on_stop:
            admin = postgres.database_url(
                "postgres", host=config.postgres_host, port=config.postgres_port
            )
            with contextlib.suppress(Exception):
                postgres.drop_database(admin, created[0])
        raise


def _start(config: SelfhostedConfig, started: list[Service], created: list[str]) -> SelfhostedStack:
    state_dir = config.state_dir
    data_dir = config.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    redis_host, redis_port = _redis_address(config.redis_url)
    redis_service = redis.ensure_running(redis_port, host=redis_host, state_dir=state_dir)
    started.append(redis_service)

    if config.database_url:
        database_url = config.database_url
    else:
        postgres.ensure_running(config.postgres_host, config.postgres_port)
        admin_url = postgres.database_url(
            "postgres", host=config.postgres_host, port=config.postgres_port
        )
        if not database_exists(admin_url, config.database):
            postgres.create_database(admin_url, config.database)
            created.append(config.database)
        database_url = postgres.with_database(admin_url, config.database)

    model_path = config.model_path or ensure_tiny_model(data_dir / "models" / "tiny-sd")
    api_port = config.api_port or free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    api_key = config.api_key or "selfhosted-" + secrets.token_urlsafe(18)
    worker_name = f"txt2img-{secrets.token_hex(3)}@{socket.gethostname()}"

    env = {
        **os.environ,
        "APP_ENV": "selfhosted",
        "DATABASE_URL": database_url,
        "REDIS_URL": config.redis_url,
        "DATA_DIR": str(data_dir),
        "BLOB_DIR": str(data_dir / "blobs"),
        "MODEL_PATH": str(model_path),
        "BOOTSTRAP_API_KEY": api_key,
        "PORT": str(api_port),
        "LOG_LEVEL": config.log_level,
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
        **({"REDIS_KEY_PREFIX": config.redis_key_prefix} if config.redis_key_prefix else {}),
        **config.extra_env,
    }
    stack = SelfhostedStack(
        config=config,
        env=env,
        api_url=api_url,
        api_key=api_key,
        database_url=database_url,
        worker_name=worker_name,
        services=started,
        _created_database=created[0] if created else None,
    )
    # The worker first: it applies the database migrations while it loads the model, and the
    # API starts on a migrated database.
    stack.worker = _start_worker(env, worker_name, state_dir, log_id=api_port)
    stack.api = _start_app("api", "api", api_url, env, state_dir)
    return stack


def database_exists(admin_url: str, name: str) -> bool:
    engine = create_engine(admin_url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
        return found is not None
    finally:
        engine.dispose()


def _start_worker(env: dict[str, str], name: str, state_dir: Path, *, log_id: int) -> Service:
    """The Celery worker, ready once it answers a ping addressed to its node name. It has no
    port: `log_id` (the API's port) names its log and pid files in `state_dir`."""
    app = _ping_app(env)

    def ready() -> bool:
        try:
            replies = app.control.ping(destination=[name], timeout=1.0)
        except Exception:
            return False
        return any(name in reply for reply in replies or [])

    try:
        return start_process(
            "celery-worker",
            [sys.executable, "-m", "gpu_worker.celery_worker", f"--hostname={name}"],
            host=name.rsplit("@", 1)[-1],
            port=log_id,
            state_dir=state_dir,
            env=env,
            ready=ready,
            timeout=WORKER_READY_TIMEOUT_S,
        )
    finally:
        app.close()


def _ping_app(env: dict[str, str]) -> Any:
    from dal.celery import make_celery_app

    return make_celery_app(settings_from_env(env))
