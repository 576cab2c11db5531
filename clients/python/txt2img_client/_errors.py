"""Every exception the client raises, in one hierarchy:

    Txt2ImgError
    ├── ApiError                  the service answered with an error; `.problem` holds its
    │   │                         RFC 9457 document (`.status`, `.code`, `.retry_after` too)
    │   ├── InvalidRequest        400, 413, 415, 422: the request is wrong (`.problem.errors`)
    │   ├── Unauthenticated       401: no key, an unknown or a revoked one
    │   ├── Forbidden             403: e.g. an expired or altered image URL
    │   ├── NotFound              404: no such job (another owner's job looks the same)
    │   ├── Conflict              409: e.g. canceling a job that has ended (`job-finished`)
    │   ├── RateLimited           429: the rate limit or a quota (after the retries allowed)
    │   └── ServerError           5xx
    │       └── ServiceUnavailable    503 (after the retries allowed)
    ├── ServiceUnreachable        no answer at all: refused, reset, timed out
    ├── UnexpectedResponse        an answer that is not what the API documents
    └── WaitTimeout               `wait()` ran out of time; `.job` is the last state seen

Errors of httpx are raised as these, the original one chained (`raise X(...) from exc`).
"""

from __future__ import annotations

import json

import httpx

from ._models import Job, Problem
from ._retry import retry_after_s


class Txt2ImgError(Exception):
    """Anything the client raises."""


class ApiError(Txt2ImgError):
    """The service answered with an error status; `problem` is what it said."""

    def __init__(self, problem: Problem, *, retry_after: float | None = None) -> None:
        self.problem = problem
        self.retry_after = retry_after
        super().__init__(
            f"{problem.status} {problem.code or 'error'}: {problem.detail or problem.title}"
        )

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def code(self) -> str | None:
        return self.problem.code


class InvalidRequest(ApiError):
    """400, 413, 415 or 422: the request itself is wrong; sending it again will not help."""


class Unauthenticated(ApiError):
    """401: the API key is missing, unknown or revoked."""


class Forbidden(ApiError):
    """403: e.g. an image URL that has expired or was altered."""


class NotFound(ApiError):
    """404: no such job, or one of another owner."""


class Conflict(ApiError):
    """409: the job's state does not allow it, e.g. canceling a job that has ended."""


class RateLimited(ApiError):
    """429: the rate limit or a quota; `retry_after` says when to try again."""


class ServerError(ApiError):
    """5xx: the service failed."""


class ServiceUnavailable(ServerError):
    """503: a store or the queue behind the service is down; try again later."""


class ServiceUnreachable(Txt2ImgError):
    """No answer: the connection was refused, reset or timed out. `url` is the origin tried."""

    def __init__(self, url: str, cause: httpx.TransportError) -> None:
        self.url = url
        super().__init__(f"cannot reach {url}: {type(cause).__name__}: {cause}")


class UnexpectedResponse(Txt2ImgError):
    """The service answered something the API does not document (another server, a proxy)."""


class WaitTimeout(Txt2ImgError):
    """`wait()` ran out of time before the job ended; `job` is its last known state."""

    def __init__(self, job: Job, timeout: float) -> None:
        self.job = job
        super().__init__(f"job {job.id} is still {job.status} after {timeout:g} s")


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_from_response(response: httpx.Response) -> ApiError:
    """The exception for an error answer (its body must have been read)."""
    status = response.status_code
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        try:
            problem = Problem.from_dict(body, status=status, reason=response.reason_phrase)
        except (KeyError, TypeError, ValueError):
            problem = Problem(status=status, code=None, title=response.reason_phrase, raw=body)
    else:
        problem = Problem(status=status, code=None, title=response.reason_phrase or str(status))
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return kind(problem, retry_after=retry_after_s(response.headers.get("Retry-After")))
