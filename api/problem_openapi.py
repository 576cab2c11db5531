"""Error responses in the OpenAPI document as what they are on the wire: problem+json.

FastAPI files a `responses={...: {"model": Problem}}` schema under `application/json` (the
route's media type) and adds its own 422 (`HTTPValidationError`) to every route with
parameters, while every error this API sends is `application/problem+json` with the `Problem`
body (api/problems.py). Clients and schema checkers read the document, so it is rewritten
once, when first generated: every 4xx/5xx answer that is a problem is documented only as
`application/problem+json` with the `Problem` schema.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from api.problems import PROBLEM_MEDIA_TYPE
from api.schemas import Problem

_REF_PREFIX = "#/components/schemas/"
_PROBLEM_REF = {"$ref": f"{_REF_PREFIX}Problem"}
# FastAPI's own 422 body, which this API never sends.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for the problem statuses it can answer."""
    return {code: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}} for code in codes}


def document_problems(app: FastAPI) -> None:
    """Make `app.openapi()` document error responses as problem+json."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = rewrite_problem_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def rewrite_problem_responses(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with each error response that is a problem (or FastAPI's default 422) as
    problem+json only; a non-problem error body (e.g. /readyz's 503 health report) stays."""
    for operation in _operations(document):
        for status, response in operation.get("responses", {}).items():
            if not _is_error(status):
                continue
            content = response.get("content", {})
            if PROBLEM_MEDIA_TYPE in content or _is_fastapi_validation(content):
                response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": dict(_PROBLEM_REF)}}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template=_REF_PREFIX + "{model}")
    for name, schema in problem_schema.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas.setdefault("Problem", problem_schema)
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        if f'"{_REF_PREFIX}{name}"' not in json.dumps(document):
            schemas.pop(name, None)
    return document


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        operation
        for path_item in document.get("paths", {}).values()
        for operation in path_item.values()
        if isinstance(operation, dict) and "responses" in operation
    ]


def _is_error(status: str) -> bool:
    return status[:1] in ("4", "5")


def _is_fastapi_validation(content: dict[str, Any]) -> bool:
    schema = content.get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == f"{_REF_PREFIX}HTTPValidationError")
