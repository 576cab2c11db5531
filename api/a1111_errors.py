"""Errors of the AUTOMATIC1111 dialect in A1111's shape.

A1111's API answers a failure through its own exception handler (`modules/api/api.py`,
`api_middleware`/`handle_exception`): `{"error": <exception class>, "detail": ..., "body": ...,
"errors": str(exception)}` with the exception's status; a request its pydantic model refuses
gets FastAPI's 422, whose `detail` is a list of `{loc, msg, type}`. Every problem the shared
handlers raise (api/problems.py: authentication, rate limits, quotas, validation, stores down)
is rendered so for paths under `/sdapi/`, registered as a problem dialect: same status, same
headers (`WWW-Authenticate`, `Retry-After`, `RateLimit-*`), and `code`, the native problem's
stable code, beside A1111's keys.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from api.a1111_schemas import A1111ErrorOut
from api.problems import ProblemError

A1111_PATH_PREFIX = "/sdapi/"


def is_a1111_path(path: str) -> bool:
    return path.startswith(A1111_PATH_PREFIX)


def a1111_error_body(problem: ProblemError) -> dict[str, Any]:
    text = problem.detail or problem.title
    detail: str | list[dict[str, Any]] = text
    error = "HTTPException"
    if problem.code == "validation-error" and problem.errors:
        error = "RequestValidationError"
        detail = [
            {"loc": _loc(e["field"]), "msg": e["message"], "type": "value_error"}
            for e in problem.errors
        ]
    return {
        **problem.extensions,
        "error": error,
        "detail": detail,
        "body": "",
        "errors": f"{problem.status}: {text}",
        "code": problem.code,
    }


def render_a1111_problem(problem: ProblemError, request: Request) -> Response:
    return JSONResponse(
        a1111_error_body(problem), status_code=problem.status, headers=problem.headers
    )


def _loc(field: str) -> list[str | int]:
    """`body.styles.0` -> ["body", "styles", 0], as FastAPI writes a location. Only ASCII
    digits are an index: a client's own key such as "¹" passes str.isdigit but is no int."""
    return [int(part) if part.isascii() and part.isdigit() else part for part in field.split(".")]


def a1111_error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for the error statuses it can answer, in A1111's shape (422
    included, so that FastAPI's own HTTPValidationError is not documented in its place)."""
    return {
        code: {"model": A1111ErrorOut, "description": "An A1111 error."}
        for code in sorted({*codes, 422})
    }
