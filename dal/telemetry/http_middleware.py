"""ASGI middleware for the API and the worker's HTTP app: a latency histogram by route
template and status, and a server span (when tracing is on) per request."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dal.telemetry.metrics import HTTP_REQUEST_SECONDS
from dal.telemetry.tracing import span

# Anything else is counted as OTHER, so clients cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


def route_template(scope: Scope) -> str:
    """`/v1/jobs/{job_id}`, not the path itself (one series per route, not per job)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestTelemetryMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        status = 500  # what the client gets when the app raises before answering
        started = time.perf_counter()

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with span(method, kind="server", attributes={"http.request.method": method}) as opened:
            try:
                await self._app(scope, receive, send_and_watch)
            finally:
                route = route_template(scope)
                opened.update_name(f"{method} {route}")
                opened.set_attribute("http.route", route)
                opened.set_attribute("http.response.status_code", status)
                HTTP_REQUEST_SECONDS.labels(method, route, str(status)).observe(
                    time.perf_counter() - started
                )
