"""Background processes for local services: start detached, wait until the port answers,
remember the pid in a state folder, stop by pid. Nothing here assumes it owns the machine:
every service takes its port as an argument."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess  # nosec B404 # starts local stand-ins; each call is checked (B603)
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path(".data/emulators")


class ServiceUnavailable(RuntimeError):
    """A service could not be started: the message says what to install or check."""


@dataclass(frozen=True)
class Service:
    name: str
    host: str
    port: int
    # None when the service was already running and we did not start it.
    pid: int | None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def started_here(self) -> bool:
        return self.pid is not None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ready(url: str, timeout: float = 2.0) -> bool:
    """True when GET {url}/readyz answers 200 (the API's and the worker's readiness probe)."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=timeout) as response:  # noqa: S310 - callers pass http://host:port  # nosec B310
            return bool(response.status == 200)
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise ServiceUnavailable(f"{what} did not become ready within {timeout:.0f} s")


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    host: str,
    port: int,
    state_dir: Path = DEFAULT_STATE_DIR,
    env: Mapping[str, str] | None = None,
    ready: Callable[[], bool] | None = None,
    timeout: float = 60.0,
) -> Service:
    """Start `argv` in its own process group, logging to STATE_DIR/NAME-PORT.log, and wait
    until `ready()` (default: the port accepts connections)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / f"{name}-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - argv is built by this package, not input  # nosec B603
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    (state_dir / f"{name}-{port}.pid").write_text(str(process.pid))
    check = ready or (lambda: port_open(host, port))

    def up() -> bool:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServiceUnavailable(f"{name} exited with {process.returncode}:\n{tail}")
        return check()

    try:
        wait_until(up, timeout=timeout, what=f"{name} on {host}:{port}")
    except BaseException:
        stop_pid(process.pid)
        raise
    return Service(name=name, host=host, port=port, pid=process.pid)


def stop_pid(pid: int, *, timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # Reap it if it is our child, so it does not linger as a zombie.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def kill_pid(pid: int, *, timeout: float = 15.0) -> None:
    """SIGKILL the process group (no shutdown at all) and wait until the process is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def stop_service(service: Service) -> None:
    if service.pid is not None:
        stop_pid(service.pid)


def stop_recorded(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Stop every process whose pid file is in `state_dir` (`make dev-down`)."""
    stopped = []
    for pid_file in sorted(state_dir.glob("*.pid")):
        with contextlib.suppress(ValueError):
            stop_pid(int(pid_file.read_text().strip()))
            stopped.append(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return stopped
