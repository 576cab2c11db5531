"""The whole local cloud stack: emulators, Redis, then the worker and the API as separate
processes with APP_ENV=emulator. Used by `make dev` and by the emulator e2e tests.

Every port is configurable and defaults to a free one (the API's to PORT or 8080), so several
stacks can run on one machine; Redis keys and Firestore collections get a per-stack prefix.
"""

from __future__ import annotations

import os
import secrets
import subprocess  # nosec B404 # builds the tiny model; each call is checked (B603)
import sys
from dataclasses import dataclass, field
from pathlib import Path

from emulators import firestore, gcs, pubsub, redis
from emulators.process import (
    DEFAULT_STATE_DIR,
    Service,
    ServiceUnavailable,
    free_port,
    http_ready,
    kill_pid,
    start_process,
    stop_service,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class StackConfig:
    project: str = "local-project"
    api_port: int | None = None
    worker_port: int | None = None
    pubsub_port: int | None = None
    firestore_port: int | None = None
    gcs_port: int | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    bucket: str = "txt2img-images"
    api_key: str | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    data_dir: Path = Path(".data/dev")
    model_path: Path | None = None
    max_delivery_attempts: int = 5
    min_backoff_s: float = 10.0
    max_backoff_s: float = 600.0
    # Extra environment for both processes (e.g. fault injection in tests).
    extra_env: dict[str, str] = field(default_factory=dict)
    # And for one of them only (e.g. each behind its own proxy to a store).
    worker_env: dict[str, str] = field(default_factory=dict)
    api_env: dict[str, str] = field(default_factory=dict)
    # Prefix for the topic and subscription names: several stacks on one Pub/Sub emulator.
    pubsub_prefix: str = ""
    log_level: str = "info"


@dataclass
class Stack:
    config: StackConfig
    env: dict[str, str]
    api_url: str
    worker_url: str
    api_key: str
    services: list[Service] = field(default_factory=list)
    worker: Service | None = None
    api: Service | None = None

    def stop(self) -> None:
        for service in [self.api, self.worker, *reversed(self.services)]:
            if service is not None:
                stop_service(service)
        self.api = self.worker = None
        self.services.clear()

    def restart_worker(self, extra_env: dict[str, str] | None = None) -> None:
        """Stop the worker (SIGTERM) and start it again, optionally with changed settings."""
        if self.worker is not None:
            stop_service(self.worker)
        self.env.update(extra_env or {})
        self.start_worker()

    def start_worker(self) -> None:
        self.worker = _start_app(
            "worker",
            "gpu_worker",
            self.worker_url,
            {**self.env, **self.config.worker_env},
            self.config.state_dir,
        )

    def kill_worker(self) -> None:
        """SIGKILL the worker (no shutdown: what a crash or a lost instance looks like) and
        wait until it is gone; `start_worker` brings one back."""
        if self.worker is not None and self.worker.pid is not None:
            kill_pid(self.worker.pid)
        self.worker = None


def start_stack(config: StackConfig) -> Stack:
    started: list[Service] = []
    try:
        return _start(config, started)
    except BaseException:
        for service in reversed(started):
            stop_service(service)
        raise


def _start(config: StackConfig, started: list[Service]) -> Stack:
    state_dir = config.state_dir
    data_dir = config.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    ps = pubsub.start(config.pubsub_port, project=config.project, state_dir=state_dir)
    started.append(ps)
    fs = firestore.start(config.firestore_port, project=config.project, state_dir=state_dir)
    started.append(fs)
    storage = gcs.start(config.gcs_port, state_dir=state_dir)
    started.append(storage)
    redis_host, redis_port = _redis_address(config.redis_url)
    started.append(redis.ensure_running(redis_port, host=redis_host, state_dir=state_dir))

    gcs.create_bucket(storage.address, config.bucket, config.project)
    key_file = data_dir / "gcs-signing-key.json"
    if not key_file.exists():
        from dal.gcs.signing import generate_local_signing_key

        generate_local_signing_key(key_file)
    model_path = config.model_path or ensure_tiny_model(data_dir / "models" / "tiny-sd")

    api_port = config.api_port or free_port()
    worker_port = config.worker_port or free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    worker_url = f"http://127.0.0.1:{worker_port}"
    api_key = config.api_key or "dev-" + secrets.token_urlsafe(18)
    stack_id = secrets.token_hex(4)

    topology = pubsub.Topology(
        project=config.project,
        max_delivery_attempts=config.max_delivery_attempts,
        min_backoff_s=config.min_backoff_s,
        max_backoff_s=config.max_backoff_s,
    ).prefixed(config.pubsub_prefix)
    pubsub.seed(ps.address, topology, worker_url=worker_url)
    env = {
        **os.environ,
        "APP_ENV": "emulator",
        "GCP_PROJECT": config.project,
        "PUBSUB_EMULATOR_HOST": ps.address,
        "FIRESTORE_EMULATOR_HOST": fs.address,
        "STORAGE_EMULATOR_HOST": f"http://{storage.address}",
        "GCS_BUCKET": config.bucket,
        "GCS_SIGNING_KEY_FILE": str(key_file),
        "REDIS_URL": config.redis_url,
        # A stack of its own on a shared Redis and a shared Firestore emulator.
        "REDIS_KEY_PREFIX": f"txt2img:{stack_id}:",
        "FIRESTORE_COLLECTION_PREFIX": f"s{stack_id}_",
        "MAX_DELIVERY_ATTEMPTS": str(config.max_delivery_attempts),
        "PUBSUB_TOPIC": topology.topic,
        "PUBSUB_JOBS_SUBSCRIPTION": topology.push_subscription,
        "PUBSUB_DEAD_LETTER_TOPIC": topology.dead_letter_topic,
        "PUBSUB_DEAD_LETTER_SUBSCRIPTION": topology.dead_letter_subscription,
        "PUBSUB_DEAD_LETTER_RECORDER_SUBSCRIPTION": topology.dead_letter_push_subscription,
        "BOOTSTRAP_API_KEY": api_key,
        "MODEL_PATH": str(model_path),
        "DATA_DIR": str(data_dir),
        "PORT": str(api_port),
        "WORKER_PORT": str(worker_port),
        "LOG_LEVEL": config.log_level,
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
        **config.extra_env,
    }
    stack = Stack(
        config=config,
        env=env,
        api_url=api_url,
        worker_url=worker_url,
        api_key=api_key,
        services=started,
    )
    stack.start_worker()
    stack.api = _start_app("api", "api", api_url, {**env, **config.api_env}, state_dir)
    return stack


def _start_app(name: str, module: str, url: str, env: dict[str, str], state_dir: Path) -> Service:
    host, port = url.removeprefix("http://").split(":")
    return start_process(
        f"{name}",
        [sys.executable, "-m", module],
        host=host,
        port=int(port),
        state_dir=state_dir,
        env=env,
        ready=lambda: http_ready(url),
        timeout=180,
    )


def ensure_tiny_model(path: Path) -> Path:
    """The tiny development model at `path`, built in a subprocess (keeping torch out of the
    caller) when it is not there yet."""
    if not (path / "model_index.json").is_file():
        subprocess.run(  # noqa: S603 - our own module, fixed arguments  # nosec B603
            [sys.executable, "-m", "gpu_worker.tiny_model", "--output", str(path)],
            check=True,
            cwd=REPO_ROOT,
            capture_output=True,
        )
    return path


def _redis_address(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = rest.partition(":")
    if not host:
        raise ServiceUnavailable(f"REDIS_URL {url!r} names no host")
    return host, int(port or 6379)
