"""The three requests a job's client makes, read straight from the ASGI scope when they are
plainly well-formed: `POST /v1/jobs`, `GET /v1/jobs/{job_id}` and `GET /v1/blobs/{key}`.

Why: FastAPI's per-request work around a route cost about 0.65 ms of the event loop's CPU
per request here, more than the submit's own transaction: 0.29 ms resolving the dependency
graph (four passes over parameter kinds per node, type checks per parameter), 0.36 ms
matching included routers (twice) and handling the request around the route. For a job's
requests that was about a fifth of its serving CPU (issue 19, docs/performance.md, "A tenth
round").

What a hot route does not change:
- the answer: once the parameters are read, the documented route's own function answers
  (`answer_submit`, `answer_job`, `answer_blob`), so the work, the headers and the body are
  one code path;
- the reading: each parameter is read as FastAPI reads it (the first of a repeated header,
  the body through `json.loads` and the model's validation, the Bearer key as `HTTPBearer`
  parses it), and the caller is admitted by the `Caller` dependency's own function
  (`api.deps.admitted`: the key kept or read from the store, the rate limit hit once, in
  memory or in Redis);
- everything else: a request that is not plainly well-formed (invalid JSON or fields, a
  repeated query parameter, a path parameter out of bounds, a root path) is routed as if this
  module did not exist, its body replayed, before anything has happened to it. FastAPI then
  reports its errors in its own order (a body that is not JSON before the credentials, the
  credentials before the fields); a well-formed request's errors come from the same
  functions either way: tests/unit/api/test_hot_routes.py sends the same requests through
  both ways and compares the answers;
- errors raised while answering (no or a revoked key, the rate limit, a quota, a store that
  is down) are raised inside the app's exception middleware, as the route's are, and rendered
  by the same problem handlers; the request metrics name the same route templates.

The OpenAPI document still describes the routes: these are not API routes, so FastAPI does
not see them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.datastructures import Headers, URLPath
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from api.body_guard import replaying
from api.deps import BEARER_CHALLENGE, admitted, bearer_key
from api.routes.blobs import answer_blob
from api.routes.jobs import answer_job, answer_submit
from api.schemas import JobCreate
from api.wiring import Services
from dal.telemetry.job_context import set_job_ids

# Set on a request a hot route handed back, so that routing it again passes the hot routes by.
_DECLINED = "txt2img.hot_route_declined"
_JOBS = "/v1/jobs"
_JOB_PREFIX = "/v1/jobs/"
_BLOB_PREFIX = "/v1/blobs/"
_JOB_ID_MAX = 64  # the route's Path(max_length=64)
_EXPIRES_MAX = 2**40  # the route's Query(le=2**40)
_SIG_LENGTH = 64  # the route's Query(min_length=64, max_length=64)
_DIGITS = re.compile(r"[0-9]+")

# (scope, body) -> the answer, or None: not plainly well-formed, route it as usual.
Serve = Callable[[Scope, bytes], Awaitable[Response | None]]


class HotRoute(BaseRoute):
    """A documented route's plainly well-formed requests, read from the scope; any other
    request goes on to the routes after it (see the module's docstring)."""

    def __init__(self, method: str, path: str, serve: Serve, *, reads_body: bool) -> None:
        self.method = method
        # The documented route's template: the request metrics label requests with it.
        self.path = path
        self._serve = serve
        self._reads_body = reads_body
        brace = path.find("{")
        self._prefix = path[:brace] if brace >= 0 else None

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if (
            scope["type"] == "http"
            and scope["method"] == self.method
            and not scope.get("root_path")
            and _DECLINED not in scope
        ):
            path: str = scope["path"]
            prefix = self._prefix
            if (path == self.path) if prefix is None else path.startswith(prefix):
                return Match.FULL, {"route": self}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        # Not named: `url_for` finds the documented route.
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        if self._reads_body:
            body, complete = await _read_body(receive)
            if not complete:
                return  # the client hung up
            receive = replaying(body, receive)
        response = await self._serve(scope, body)
        if response is None:
            scope[_DECLINED] = True
            await scope["router"].app(scope, receive, send)
            return
        await response(scope, receive, send)


def install_hot_routes(app: FastAPI) -> None:
    """Put the hot routes ahead of every other route of `app`."""
    app.router.routes[0:0] = [
        HotRoute("POST", _JOBS, _submit, reads_body=True),
        HotRoute("GET", "/v1/jobs/{job_id}", _job, reads_body=False),
        HotRoute("GET", "/v1/blobs/{key:path}", _blob, reads_body=False),
    ]


async def _submit(scope: Scope, body: bytes) -> Response | None:
    if not body:
        return None
    try:
        fields = JobCreate.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError included
        return None
    headers = Headers(scope=scope)
    caller, limit_headers = await admitted(
        _services(scope), bearer_key(headers.get("authorization")), BEARER_CHALLENGE, "submit"
    )
    return await answer_submit(
        caller,
        fields,
        str(Request(scope).base_url),
        idempotency_key=headers.get("idempotency-key"),
        prefer=headers.get("prefer"),
        headers=limit_headers,
    )


async def _job(scope: Scope, _body: bytes) -> Response | None:
    job_id: str = scope["path"][len(_JOB_PREFIX) :]
    # The documented route's `{job_id}`: one path segment of 1 to 64 characters.
    if not job_id or len(job_id) > _JOB_ID_MAX or "/" in job_id:
        return None
    # Named on every line the request logs from here, a refusal's included, as the route's
    # first dependency (`job_id_of_path`) names it.
    set_job_ids([job_id])
    headers = Headers(scope=scope)
    caller, limit_headers = await admitted(
        _services(scope), bearer_key(headers.get("authorization")), BEARER_CHALLENGE, "read"
    )
    return await answer_job(
        caller,
        job_id,
        str(Request(scope).base_url),
        prefer=headers.get("prefer"),
        headers=limit_headers,
    )


async def _blob(scope: Scope, _body: bytes) -> Response | None:
    query = _single_values(scope["query_string"])
    if query is None:
        return None
    expires, sig = query.get("expires"), query.get("sig")
    if expires is None or sig is None or _DIGITS.fullmatch(expires) is None:
        return None
    expires_at = int(expires)
    if expires_at > _EXPIRES_MAX or len(sig) != _SIG_LENGTH:
        return None
    key: str = scope["path"][len(_BLOB_PREFIX) :]
    return answer_blob(_services(scope), key, expires=expires_at, sig=sig)


def _services(scope: Scope) -> Services:
    services: Services = scope["app"].state.services
    return services


def _single_values(query_string: bytes) -> dict[str, str] | None:
    """The query's parameters, parsed as Starlette parses them; None when one is repeated
    (FastAPI takes the last of a repeated scalar: left to it)."""
    values: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in values:
            return None
        values[name] = value
    return values


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request's body, and whether it came whole (False: the client disconnected)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True
