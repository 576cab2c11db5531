"""Serving the registry: the body of GET /metrics (optionally behind a bearer token) and, for
processes without an HTTP app (the Celery worker), a small server of their own."""

from __future__ import annotations

import hmac
import logging
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, start_http_server
from pydantic import SecretStr

from dal.settings import Settings

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def metrics_text() -> bytes:
    """Every series of this process in Prometheus' text format."""
    return generate_latest(REGISTRY)


def scrape_allowed(
    authorization: str | None, token: SecretStr | None, *, open_without_token: bool = True
) -> bool:
    """True when the request presents METRICS_BEARER_TOKEN; without a token set, what
    `open_without_token` says (a public API in a production profile: closed)."""
    if token is None:
        return open_without_token
    scheme, _, presented = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected)


@dataclass
class MetricsServer:
    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(host: str, port: int) -> MetricsServer | None:
    """GET /metrics on host:port in a daemon thread (port 0: any free one). A port already in
    use is logged and skipped: metrics must not keep a worker from working."""
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics server not started on %s:%d: %s", host, port, exc)
        return None
    started = MetricsServer(server=server, thread=thread)
    log.info("serving /metrics on %s:%d", host, started.port)
    return started


def start_configured_metrics_server(
    settings: Settings, host: str, *, default_port: int | None = None
) -> MetricsServer | None:
    """The METRICS_PORT server of this process, if it has one (unset: `default_port`)."""
    port = settings.metrics_port if settings.metrics_port is not None else default_port
    return start_metrics_server(host, port) if port else None
