"""Gives every request a W3C trace context (the caller's, Cloud Run's, or a new one), so the
job it publishes carries it to the worker and both processes' logs join up."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dal.trace_context import from_headers, set_traceparent


class TraceContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        traceparent = from_headers(headers.get("traceparent"), headers.get("x-cloud-trace-context"))
        # Context variables set here are copied into the threadpool that runs sync routes.
        set_traceparent(traceparent)

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("traceparent", traceparent)
            await send(message)

        await self._app(scope, receive, send_with_trace)
