"""RFC 9457 problem+json at the API's edge: every error a client can see is built here.

Services and adapters raise their own exceptions; this module maps them to HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from dal.errors import (
    DailyImageQuotaExceeded,
    EnqueueFailed,
    IdempotencyConflict,
    InvalidCursor,
    JobAlreadyFinished,
    NotFound,
    QuotaExceeded,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

# code -> (status, title). The code is stable: clients branch on it.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "invalid-json": (400, "Request body is not valid JSON"),
    "unauthenticated": (401, "Missing or invalid API key"),
    "forbidden": (403, "Access denied"),
    "not-found": (404, "Resource not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "job-finished": (409, "Job already finished"),
    "payload-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "validation-error": (422, "Request validation failed"),
    "idempotency-key-reused": (422, "Idempotency-Key reused with a different request"),
    "rate-limited": (429, "Too many requests"),
    "quota-in-flight-exceeded": (429, "Too many jobs in flight"),
    "quota-images-per-day-exceeded": (429, "Daily image quota exceeded"),
    "internal-error": (500, "Internal server error"),
    "service-unavailable": (503, "Service temporarily unavailable"),
}


class ProblemError(Exception):
    def __init__(
        self,
        code: str,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, str]] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or code)
        self.code = code
        self.status, self.title = PROBLEM_TYPES[code]
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = list(errors) if errors is not None else None
        # RFC 9457 extension members, beside the standard ones (which they never replace).
        self.extensions = dict(extensions or {})

    @classmethod
    def invalid_field(cls, field: str, message: str) -> ProblemError:
        """A 422 about one input, e.g. ("query.limit", "must be at most 100"), shaped as the
        request validation's own problems are."""
        return cls(
            "validation-error",
            f"{field}: {message}",
            errors=[{"field": field, "message": message}],
        )


def problem_response(problem: ProblemError, instance: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        **problem.extensions,
        "type": f"/problems/{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "code": problem.code,
    }
    if problem.detail:
        body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    if problem.errors is not None:
        body["errors"] = problem.errors
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE
    )


# An API dialect that answers errors in its own shape (the OpenAI Images API, AUTOMATIC1111):
# a test of the request's path, and the renderer of a problem for it. Every error handler
# below goes through render_problem, so authentication, rate limits, validation and service
# errors all reach a dialect's clients in the shape their SDKs parse.
PathTest = Callable[[str], bool]
ProblemRenderer = Callable[[ProblemError, Request], Response]


def register_problem_dialect(app: FastAPI, applies_to: PathTest, render: ProblemRenderer) -> None:
    dialects: list[tuple[PathTest, ProblemRenderer]] = getattr(app.state, "problem_dialects", [])
    dialects.append((applies_to, render))
    app.state.problem_dialects = dialects


def render_problem(request: Request, problem: ProblemError) -> Response:
    """The problem in the shape the request's dialect speaks; problem+json by default."""
    path = request.url.path
    dialects: list[tuple[PathTest, ProblemRenderer]] = getattr(
        request.app.state, "problem_dialects", []
    )
    for applies_to, render in dialects:
        if applies_to(path):
            return render(problem, request)
    return problem_response(problem, path)


def _field_name(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_problem(exc: RequestValidationError) -> ProblemError:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return ProblemError("invalid-json", "The request body could not be parsed as JSON.")
    field_errors = []
    for e in errors:
        message = str(e.get("msg", "invalid"))
        # pydantic prefixes messages from our own validators; the prefix helps no one.
        message = message.removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            message = "unknown field"
        field_errors.append({"field": _field_name(e.get("loc", ())), "message": message})
    detail = "; ".join(f"{fe['field']}: {fe['message']}" for fe in field_errors)
    return ProblemError("validation-error", detail, errors=field_errors)


_E = TypeVar("_E", bound=Exception)


def _as(exc: Exception, kind: type[_E]) -> _E:
    # Starlette registers handlers per exception class, so this holds; it narrows the type.
    if not isinstance(exc, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(exc).__name__}") from exc
    return exc


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        return render_problem(request, _as(exc, ProblemError))

    async def on_validation(request: Request, exc: Exception) -> Response:
        problem = _validation_problem(_as(exc, RequestValidationError))
        return render_problem(request, problem)

    async def on_http(request: Request, exc: Exception) -> Response:
        exc = _as(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "method-not-allowed", 401: "unauthenticated"}.get(
            exc.status_code
        )
        if code is None:
            code = "internal-error" if exc.status_code >= 500 else "validation-error"
        problem = ProblemError(code, str(exc.detail), headers=exc.headers)
        return render_problem(request, problem)

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return render_problem(request, ProblemError("not-found", str(exc)))

    async def on_invalid_cursor(request: Request, exc: Exception) -> Response:
        problem = ProblemError.invalid_field("query.cursor", "not a cursor this service issued")
        return render_problem(request, problem)

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("dependency unavailable: %s", exc)
        problem = ProblemError(
            "service-unavailable",
            "A backing service is unavailable; retry shortly.",
            headers={"Retry-After": "5"},
        )
        return render_problem(request, problem)

    async def on_queue_unavailable(request: Request, exc: Exception) -> Response:
        exc = _as(exc, EnqueueFailed)
        problem = ProblemError(
            "service-unavailable",
            f"The job could not be queued and was marked failed (job {exc.job.id}); "
            "submit it again shortly.",
            headers={"Retry-After": "5"},
        )
        return render_problem(request, problem)

    async def on_idempotency_conflict(request: Request, exc: Exception) -> Response:
        problem = ProblemError(
            "idempotency-key-reused",
            str(exc),
            errors=[{"field": "header.Idempotency-Key", "message": str(exc)}],
        )
        return render_problem(request, problem)

    async def on_quota_exceeded(request: Request, exc: Exception) -> Response:
        exc = _as(exc, QuotaExceeded)
        extensions: dict[str, Any] = {"limit": exc.limit, "usage": exc.usage}
        if isinstance(exc, DailyImageQuotaExceeded):
            extensions["requested"] = exc.requested
        problem = ProblemError(
            exc.code,
            str(exc),
            headers={"Retry-After": str(exc.retry_after_s)},
            extensions=extensions,
        )
        return render_problem(request, problem)

    async def on_job_finished(request: Request, exc: Exception) -> Response:
        return render_problem(request, ProblemError("job-finished", str(exc)))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render_problem(request, ProblemError("internal-error"))

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(NotFound, on_not_found)
    app.add_exception_handler(InvalidCursor, on_invalid_cursor)
    app.add_exception_handler(StoreUnavailable, on_unavailable)
    app.add_exception_handler(EnqueueFailed, on_queue_unavailable)
    app.add_exception_handler(IdempotencyConflict, on_idempotency_conflict)
    app.add_exception_handler(JobAlreadyFinished, on_job_finished)
    app.add_exception_handler(QuotaExceeded, on_quota_exceeded)
    app.add_exception_handler(Exception, on_unexpected)
