"""Errors of the OpenAI dialect in OpenAI's shape, `{"error": {"message", "type", "param",
"code"}}` (https://developers.openai.com/docs/guides/error-codes), with the status that makes
the `openai` SDK raise the matching exception: 400 BadRequestError, 401 AuthenticationError,
404 NotFoundError, 409 ConflictError, 429 RateLimitError, 5xx InternalServerError.

Two sources:

- every problem the shared handlers raise (authentication, rate limits, quotas, request
  validation, stores down; api/problems.py) is rendered here for paths under `/v1/images` and
  `/v1/models`, registered as a problem dialect. A native 422 becomes OpenAI's 400
  `invalid_request_error`, since that is what OpenAI answers for a bad parameter;
- `OpenAIError`, raised by the dialect's routes for what only they can say (an unknown model,
  an option this service cannot honour, a job that failed, was canceled or is still running).

The SDK retries 408, 409, 429 and 5xx by itself and sends no idempotency key, so each retry of
a generation would be a new job: the answers about a job (it failed, was canceled, outlasted
the synchronous wait) carry `x-should-retry: false`, which the SDK obeys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from api.openai_schemas import OpenAIErrorOut
from api.problems import ProblemError

OPENAI_PATH_PREFIXES = ("/v1/images", "/v1/models")
NO_RETRY = {"x-should-retry": "false"}

# Problem codes whose OpenAI counterpart has a name of its own; the others keep theirs, in
# OpenAI's snake_case.
_CODES = {
    "unauthenticated": "invalid_api_key",
    "rate-limited": "rate_limit_exceeded",
    "validation-error": "invalid_value",
}


class OpenAIError(Exception):
    """An error only the OpenAI dialect can name, answered as it is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = error_type or ("server_error" if status >= 500 else "invalid_request_error")
        self.headers = dict(headers or {})


def is_openai_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OPENAI_PATH_PREFIXES)


def openai_error_response(error: OpenAIError) -> JSONResponse:
    body = {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def render_openai_problem(problem: ProblemError, request: Request) -> Response:
    """A shared problem (api/problems.py), as OpenAI would word it."""
    return openai_error_response(as_openai_error(problem))


def as_openai_error(problem: ProblemError) -> OpenAIError:
    status = 400 if problem.status == 422 else problem.status
    code = _CODES.get(problem.code, problem.code.replace("-", "_"))
    param = None
    message = problem.detail or problem.title
    if problem.errors:
        fields = [(_param(e["field"]), e["message"]) for e in problem.errors]
        param = fields[0][0]
        message = "; ".join(f"{name}: {text}" if name else text for name, text in fields)
        if all(text == "unknown field" for _, text in fields):
            code = "unknown_parameter"
    error_type = "invalid_request_error"
    if status == 429:
        # OpenAI's own types: a rate that recovers in seconds, or a quota that needs a new day.
        daily = problem.code == "quota-images-per-day-exceeded"
        error_type = "insufficient_quota" if daily else "requests"
    elif status >= 500:
        error_type = "server_error"
    return OpenAIError(
        status, message, code=code, param=param, error_type=error_type, headers=problem.headers
    )


def _param(field: str) -> str | None:
    """`body.size` -> `size`; `body` (the body as a whole) -> None."""
    _, _, name = field.partition(".")
    return name or None


async def on_openai_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, OpenAIError):  # registered for OpenAIError alone
        raise TypeError(f"expected OpenAIError, got {type(exc).__name__}") from exc
    return openai_error_response(exc)


def openai_error_responses(*codes: int | str) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for the error statuses it can answer, in OpenAI's shape. Add
    "4XX" to a route with parameters: FastAPI then leaves out its own 422, which these routes
    never send (a bad parameter is a 400 here, as on OpenAI's API)."""
    return {
        code: {"model": OpenAIErrorOut, "description": "An OpenAI error object."} for code in codes
    }
