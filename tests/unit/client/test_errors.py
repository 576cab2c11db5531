"""Error answers become exceptions that carry the service's problem document."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.client.fake_api import problem_response
from txt2img_client import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthenticated,
)
from txt2img_client._errors import error_from_response


class TestErrorFromResponse:
    @pytest.mark.parametrize(
        ("status", "code", "kind"),
        [
            (400, "invalid-json", InvalidRequest),
            (401, "unauthenticated", Unauthenticated),
            (403, "forbidden", Forbidden),
            (404, "not-found", NotFound),
            (405, "method-not-allowed", ApiError),
            (409, "job-finished", Conflict),
            (413, "payload-too-large", InvalidRequest),
            (415, "unsupported-media-type", InvalidRequest),
            (422, "validation-error", InvalidRequest),
            (429, "rate-limited", RateLimited),
            (500, "internal-error", ServerError),
            (503, "service-unavailable", ServiceUnavailable),
        ],
    )
    def test_each_status_has_its_exception(
        self, status: int, code: str, kind: type[ApiError]
    ) -> None:
        error = error_from_response(problem_response(status, code))
        assert type(error) is kind
        assert (error.status, error.code) == (status, code)

    def test_the_problem_document_is_all_there(self) -> None:
        response = problem_response(
            422,
            "validation-error",
            "body.width: must be a multiple of 8",
            instance="/v1/jobs",
            errors=[{"field": "body.width", "message": "must be a multiple of 8"}],
        )
        error = error_from_response(response)
        problem = error.problem
        assert problem.type == "/problems/validation-error"
        assert problem.instance == "/v1/jobs"
        assert [(e.field, e.message) for e in problem.errors] == [
            ("body.width", "must be a multiple of 8")
        ]
        assert str(error) == "422 validation-error: body.width: must be a multiple of 8"

    def test_quota_members_and_retry_after(self) -> None:
        response = problem_response(
            429,
            "quota-images-per-day-exceeded",
            headers={"Retry-After": "3600"},
            limit=100,
            usage=99,
            requested=4,
        )
        error = error_from_response(response)
        assert isinstance(error, RateLimited)
        assert error.retry_after == 3600.0
        assert error.problem.extensions == {"limit": 100, "usage": 99, "requested": 4}

    def test_an_answer_that_is_not_a_problem_still_says_what_happened(self) -> None:
        """A proxy's HTML page: the status and its reason, no code."""
        response = httpx.Response(502, text="<html>Bad Gateway</html>")
        error = error_from_response(response)
        assert isinstance(error, ServerError)
        assert (error.status, error.code, error.problem.title) == (502, None, "Bad Gateway")
        assert str(error) == "502 error: Bad Gateway"
