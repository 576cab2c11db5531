"""Redis for local runs and tests: reuse one that answers PING, or start `redis-server`.

The instances started here keep nothing on disk (`--save "" --appendonly no`).
`ensure_running` is for shared use (tests, `make dev`); `start` always starts a dedicated
server, e.g. for a test that stops it to simulate an outage.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from emulators.process import (
    DEFAULT_STATE_DIR,
    Service,
    ServiceUnavailable,
    port_open,
    start_process,
    stop_service,
)

NAME = "redis"
DEFAULT_PORT = 6379
INSTALL_HINT = (
    "install redis-server (Debian: apt-get install redis-server; macOS: brew install redis)"
)


def answers_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis that needs no password listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def ensure_running(
    port: int = DEFAULT_PORT, *, host: str = "127.0.0.1", state_dir: Path = DEFAULT_STATE_DIR
) -> Service:
    """The Redis on host:port, started if nothing answers there. `pid` is None when it was
    already running (so `stop` leaves it alone)."""
    if answers_ping(host, port):
        return Service(name=NAME, host=host, port=port, pid=None)
    return start(port, host=host, state_dir=state_dir)


def start(
    port: int,
    *,
    host: str = "127.0.0.1",
    state_dir: Path = DEFAULT_STATE_DIR,
    timeout: float = 15.0,
) -> Service:
    """Start a dedicated redis-server on host:port; refuses a port that is already taken."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailable(f"redis-server was not found: {INSTALL_HINT}")
    if answers_ping(host, port):
        raise ServiceUnavailable(f"a Redis already listens on {host}:{port}")
    if port_open(host, port):
        raise ServiceUnavailable(f"{host}:{port} is taken by something that is not an open Redis")
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        host,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(state_dir.resolve()),
    ]
    return start_process(
        NAME,
        argv,
        host=host,
        port=port,
        state_dir=state_dir,
        ready=lambda: answers_ping(host, port),
        timeout=timeout,
    )


def stop(service: Service, *, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Stop a server that `start` started (waits until it is gone); a reused one is left
    running."""
    if not service.started_here:
        return
    stop_service(service)
    (state_dir / f"{NAME}-{service.port}.pid").unlink(missing_ok=True)
