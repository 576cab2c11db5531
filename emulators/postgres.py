"""PostgreSQL for local runs and tests: make sure a server answers, create and drop databases.

Unlike the emulators, PostgreSQL is a system service here: `ensure_running` reuses a server
that already listens on the port, or starts the Debian/Ubuntu cluster that owns that port
(`pg_ctlcluster`), and leaves it running afterwards. URLs take the form

    postgresql+psycopg://postgres@127.0.0.1:5432/NAME
"""

from __future__ import annotations

import re
import shutil
import subprocess  # nosec B404 # PostgreSQL's own tools; each call is checked (B603)

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from emulators.process import Service, ServiceUnavailable, port_open, wait_until

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5432
DEFAULT_USER = "postgres"
INSTALL_HINT = "install PostgreSQL 15+ (Debian/Ubuntu: apt-get install postgresql) and start it"

# Database names this module creates or drops: plain identifiers, no quoting games.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def database_url(
    name: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, user: str = DEFAULT_USER
) -> str:
    """postgresql+psycopg://USER@HOST:PORT/NAME"""
    return f"postgresql+psycopg://{user}@{host}:{port}/{name}"


def with_database(url: str, name: str) -> str:
    """`url` with its database swapped for `name` (credentials and options kept)."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def ensure_running(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, timeout: float = 60.0
) -> Service:
    """A PostgreSQL server listening on host:port. Reuses one that is already up; otherwise
    starts the pg_ctlcluster cluster configured for `port` and waits for it. Raises
    ServiceUnavailable, naming what to install, when neither is possible.

    The returned Service has no pid even when the cluster was started here: it belongs to the
    system, and stopping it is not this module's business."""
    if port_open(host, port):
        return Service(name="postgres", host=host, port=port, pid=None)
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        raise ServiceUnavailable(
            f"nothing listens on {host}:{port} and pg_ctlcluster is not installed: {INSTALL_HINT}"
        )
    version, cluster = _cluster_for_port(port)
    result = subprocess.run(  # noqa: S603 - fixed argv, cluster names read from pg_lsclusters  # nosec B603 B607
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "start"],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    # Exit status 2 means "already running" (e.g. it listens on another address only).
    if result.returncode not in (0, 2):
        raise ServiceUnavailable(
            f"pg_ctlcluster {version} {cluster} start failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    wait_until(
        lambda: port_open(host, port),
        timeout=timeout,
        what=f"PostgreSQL {version}/{cluster} on {host}:{port}",
    )
    return Service(name="postgres", host=host, port=port, pid=None)


def start(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> Service:
    """The package's `start` shape; the same as ensure_running."""
    return ensure_running(host, port)


def _cluster_for_port(port: int) -> tuple[str, str]:
    """(version, name) of the pg_ctlcluster cluster configured for `port`."""
    listing = subprocess.run(  # nosec B603 B607 # fixed argv, found on PATH just before
        ["pg_lsclusters", "--no-header"],  # noqa: S607 - found on PATH just before
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    clusters = [line.split() for line in listing.stdout.splitlines() if line.strip()]
    for fields in clusters:
        # Ver Cluster Port Status Owner Data-directory Log-file
        if len(fields) >= 3 and fields[2] == str(port):
            return fields[0], fields[1]
    raise ServiceUnavailable(
        f"no PostgreSQL cluster is configured for port {port} "
        f"(pg_lsclusters: {listing.stdout.strip() or listing.stderr.strip() or 'nothing'}); "
        f"{INSTALL_HINT}"
    )


def create_database(admin_url: str, name: str) -> str:
    """Create database `name` on the server of `admin_url`; returns its URL."""
    _check_name(name)
    _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting whoever is still connected."""
    _check_name(name)
    _admin_execute(
        admin_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = :name AND pid <> pg_backend_pid()",
        {"name": name},
    )
    _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain database name ([A-Za-z_][A-Za-z0-9_]*, ≤ 63)")


def _admin_execute(admin_url: str, sql: str, params: dict[str, str] | None = None) -> None:
    url: URL = make_url(admin_url)
    # CREATE/DROP DATABASE cannot run in a transaction block.
    engine = create_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    try:
        with engine.connect() as conn:
            conn.execute(text(sql), params or {})
    finally:
        engine.dispose()
