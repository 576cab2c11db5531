"""gcp-storage-emulator (PyPI), the local Cloud Storage: start it, create buckets, stop it.

Clients find it through STORAGE_EMULATOR_HOST=http://HOST:PORT (see `endpoint`). It keeps
objects in memory here (`--in-memory`), so a restart starts empty.

The emulator does not exit when its port is taken: its server thread dies and the process
lingers without serving. So `start` refuses a taken port up front, counts it ready only when
the JSON API answers (GET /storage/v1/b → 200), and gives up early when the log says the
bind failed (someone took the port between the check and the start).
"""

from __future__ import annotations

import http.client
import json
import shutil
import sys
import urllib.error
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

NAME = "gcs"
EXECUTABLE = "gcp-storage-emulator"
INSTALL_HINT = "pip install gcp-storage-emulator (it is in the project's dev extra)"
_BIND_FAILED = "Address already in use"


def executable() -> Path | None:
    """The emulator's script next to this interpreter (the venv's), else one on PATH."""
    beside = Path(sys.executable).parent / EXECUTABLE
    if beside.is_file():
        return beside
    found = shutil.which(EXECUTABLE)
    return Path(found) if found else None


def endpoint(service: Service) -> str:
    """The value for STORAGE_EMULATOR_HOST."""
    return f"http://{service.address}"


def serving(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Cloud Storage JSON API answers on host:port (the bucket list gives 200)."""
    return _status(f"http://{host}:{port}/storage/v1/b", timeout=timeout) == 200


def start(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    state_dir: Path = DEFAULT_STATE_DIR,
    timeout: float = 30.0,
) -> Service:
    """The emulator on host:port: reused (pid None) when one already serves there, else
    started; a free port is picked when `port` is None. Raises ServiceUnavailable when the
    port is taken by something else, the emulator is not installed or does not come up."""
    if port is not None:
        if serving(host, port):
            return Service(name=NAME, host=host, port=port, pid=None)
        if port_open(host, port):
            raise ServiceUnavailable(
                f"{host}:{port} is taken by something that is not a Cloud Storage emulator"
            )
    binary = executable()
    if binary is None:
        raise ServiceUnavailable(f"the GCS emulator was not found: {INSTALL_HINT}")
    port = port or free_port(host)
    log_path = state_dir / f"{NAME}-{port}.log"
    # The log is appended to across runs: only what this run writes counts.
    log_offset = log_path.stat().st_size if log_path.exists() else 0

    def ready() -> bool:
        if _BIND_FAILED in _read_from(log_path, log_offset):
            raise ServiceUnavailable(f"the GCS emulator could not bind {host}:{port}")
        return serving(host, port)

    return start_process(
        NAME,
        [str(binary), "start", f"--host={host}", f"--port={port}", "--in-memory", "--quiet"],
        host=host,
        port=port,
        state_dir=state_dir,
        ready=ready,
        timeout=timeout,
    )


def create_bucket(host_port: str, name: str, project: str = "local-project") -> None:
    """Create bucket `name` on the emulator at host_port ("127.0.0.1:9023" or a URL);
    a bucket that exists already is fine."""
    base = host_port if "://" in host_port else f"http://{host_port}"
    url = f"{base.rstrip('/')}/storage/v1/b?{urllib.parse.urlencode({'project': project})}"
    request = urllib.request.Request(  # noqa: S310 - http URL to the local emulator
        url,
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - see above  # nosec B310
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 409:  # already exists
            return
        body = exc.read().decode(errors="replace")[:500]
        raise ServiceUnavailable(f"creating bucket {name!r} failed: {exc.code} {body}") from exc
    except OSError as exc:
        raise ServiceUnavailable(f"the GCS emulator at {base} is not reachable: {exc}") from exc


def stop(service: Service) -> None:
    """Stop the emulator if `start` started it; one that was reused is left running."""
    stop_service(service)


def _status(url: str, *, timeout: float) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local http  # nosec B310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, http.client.HTTPException):  # refused, reset, or not HTTP at all
        return None


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
