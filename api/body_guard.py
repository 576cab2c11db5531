"""ASGI middleware that refuses oversized bodies (413) and non-JSON bodies (415) before any
route code or JSON parsing runs."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import ProblemError, render_problem

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self._app = app
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            await self._refuse(scope, receive, send, self._too_large())
            return

        # Bodies here are small JSON documents: read all of it (bounded), then replay it.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                await self._refuse(scope, receive, send, self._too_large())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)

        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if body and media_type != "application/json":
            problem = ProblemError(
                "unsupported-media-type",
                "Send the request body as JSON with Content-Type: application/json.",
            )
            await self._refuse(scope, receive, send, problem)
            return

        await self._app(scope, replaying(body, receive), send)

    def _too_large(self) -> ProblemError:
        return ProblemError(
            "payload-too-large", f"The request body must be at most {self._max} bytes."
        )

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, problem: ProblemError
    ) -> None:
        # In the request's dialect (api/problems.py): OpenAI's error shape on its paths.
        await render_problem(Request(scope), problem)(scope, receive, send)


def replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for whoever reads the body next: the body, then what the client sends."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
