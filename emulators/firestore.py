"""The gcloud Firestore emulator: start (or reuse) one on a port, wipe its data, stop it.

Clients find it through FIRESTORE_EMULATOR_HOST=HOST:PORT; the emulator accepts any project id
and keeps its data in memory until it stops or `reset` wipes it.
"""

from __future__ import annotations

import shutil
import urllib.parse
import urllib.request
from pathlib import Path

from emulators.process import (
    DEFAULT_STATE_DIR,
    Service,
    ServiceUnavailable,
    free_port,
    port_open,
    start_process,
    stop_service,
)

NAME = "firestore"
DEFAULT_PROJECT = "local-project"
INSTALL_HINT = (
    "install the Google Cloud CLI with `gcloud components install cloud-firestore-emulator` "
    "and Java 17"
)
START_TIMEOUT_S = 90.0


def answers(host: str, port: int, *, timeout: float = 2.0) -> bool:
    """Whether a Firestore emulator answers on HOST:PORT (its root URL says "Ok")."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=timeout) as response:  # nosec B310 # http URL built here
            body: bytes = response.read(64)
            return response.status == 200 and body.strip().startswith(b"Ok")
    except (OSError, ValueError):
        return False


def start(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    project: str = DEFAULT_PROJECT,
    state_dir: Path = DEFAULT_STATE_DIR,
    timeout: float = START_TIMEOUT_S,
) -> Service:
    """Reuse the emulator already answering on `port`, or start one there (on a free port when
    `port` is None) and wait until it answers. Raises ServiceUnavailable, naming what to install
    when gcloud or Java is missing."""
    if port is not None and port_open(host, port):
        if answers(host, port):
            return Service(name=NAME, host=host, port=port, pid=None)
        raise ServiceUnavailable(
            f"{host}:{port} is taken by something that is not a Firestore emulator "
            "(GET / did not answer Ok): pick another port"
        )
    missing = [tool for tool in ("gcloud", "java") if shutil.which(tool) is None]
    if missing:
        raise ServiceUnavailable(
            f"the Firestore emulator needs {' and '.join(missing)} on PATH: {INSTALL_HINT}"
        )
    if port is None:
        port = free_port(host)
    argv = [
        "gcloud",
        "emulators",
        "firestore",
        "start",
        f"--host-port={host}:{port}",
        f"--project={project}",
        "--quiet",
    ]
    try:
        return start_process(
            NAME,
            argv,
            host=host,
            port=port,
            state_dir=state_dir,
            ready=lambda: answers(host, port),
            timeout=timeout,
        )
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(
            f"{exc}\n(is the emulator component installed? {INSTALL_HINT})"
        ) from exc


def reset(host_port: str, project: str = DEFAULT_PROJECT, *, timeout: float = 10.0) -> None:
    """Delete every document in the emulator's default database for `project`."""
    quoted = urllib.parse.quote(project, safe="")
    url = f"http://{host_port}/emulator/v1/projects/{quoted}/databases/(default)/documents"
    request = urllib.request.Request(url, method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # nosec B310 # http URL built above
            response.read()
    except (OSError, ValueError) as exc:
        raise ServiceUnavailable(f"could not reset the Firestore emulator at {url}: {exc}") from exc


def stop(service: Service, *, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Stop the emulator if `start` started it (and forget its pid file, so that a later
    `stop_recorded` cannot signal a recycled pid); one that was already running is left
    alone."""
    if not service.started_here:
        return
    stop_service(service)
    (state_dir / f"{NAME}-{service.port}.pid").unlink(missing_ok=True)
