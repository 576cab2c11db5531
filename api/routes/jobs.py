from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from api.deps import Caller, Reader, Submitter
from api.job_service import JobRequest
from api.job_submission import (
    IdempotencyKeyHeader,
    check_idempotency_key,
    submit,
    wait_until_finished,
)
from api.problem_openapi import problem_responses
from api.problems import ProblemError
from api.schemas import JobCreate, JobListOut
from api.wiring import Services
from dal.errors import InvalidWebhookUrl
from dal.job_view import JobOut
from dal.paging import MAX_CURSOR_LENGTH
from dal.telemetry.job_context import set_job_ids

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
log = logging.getLogger(__name__)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={
        200: {
            "model": JobOut,
            "description": "The job has already finished: an identical seeded request had "
            "succeeded, or it finished within `Prefer: wait=N`.",
        },
        **problem_responses(400, 401, 413, 415, 422, 429, 503),
    },
    summary="Submit a text-to-image job",
)
async def submit_job(
    body: Annotated[JobCreate, Body()],
    request: Request,
    response: Response,
    caller: Submitter,
    idempotency_key: IdempotencyKeyHeader = None,
    prefer: Annotated[
        str | None,
        Header(
            description="`wait=N`: answer once the job has finished, or after N seconds at "
            "most (RFC 7240); 200 if it finished, 202 if not yet.",
        ),
    ] = None,
) -> Any:
    return await answer_submit(
        caller,
        body,
        str(request.base_url),
        idempotency_key=idempotency_key,
        prefer=prefer,
        headers=response.headers,
    )


async def answer_submit(
    caller: Caller,
    body: JobCreate,
    base_url: str,
    *,
    idempotency_key: str | None,
    prefer: str | None,
    headers: Mapping[str, str],
) -> Response:
    """`POST /v1/jobs` once its parameters are read: by this route, or by the hot route
    (api/hot_routes.py). `headers` are those its dependencies set (RateLimit-*)."""
    services = caller.services
    if body.webhook_url is not None:
        # Resolves the host in production profiles (SSRF guard): off the event loop.
        await run_in_threadpool(_check_webhook_url, services, body.webhook_url)
    read_at = time.monotonic()  # the job as submit() returns it is read from here on
    submitted = await submit(
        services,
        caller.principal,
        JobRequest(**body.model_dump()),
        idempotency_key=check_idempotency_key(idempotency_key),
    )
    job = submitted.job
    answer = _headers(headers)
    # What url_for("get_job") gives, without walking every route of the app on each submit.
    answer["Location"] = f"{base_url}{router.prefix.lstrip('/')}/{job.id}"
    if submitted.deduplicated:
        # An identical seeded request already succeeded: its images are the answer, now.
        answer["Deduplicated"] = "true"
    elif not submitted.created:
        answer["Idempotent-Replayed"] = "true"
    wait_s = _preferred_wait(prefer, services.settings.prefer_wait_max_s)
    if wait_s is not None:
        answer["Preference-Applied"] = f"wait={wait_s:g}"
        job = await wait_until_finished(services, caller.owner, job, wait_s, read_at=read_at)
    view = await services.view_soon(job, base_url)
    code = status.HTTP_200_OK if job.status.is_terminal else status.HTTP_202_ACCEPTED
    return _json_response(view.model_dump_json().encode(), answer, status_code=code)


@router.get(
    "",
    response_model=JobListOut,
    responses=problem_responses(401, 422, 429, 503),
    summary="List your jobs, newest first",
)
def list_jobs(
    request: Request,
    response: Response,
    caller: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> Any:
    services = caller.services
    if limit > services.settings.list_max_limit:
        raise ProblemError.invalid_field(
            "query.limit", f"must be at most {services.settings.list_max_limit}"
        )
    page = services.job_service.list(owner=caller.owner, limit=limit, cursor=cursor)
    listing = JobListOut(
        items=services.views(page.items, str(request.base_url)), next_cursor=page.next_cursor
    )
    return _json_response(listing.model_dump_json().encode(), _headers(response.headers))


def _check_webhook_url(services: Services, url: str) -> None:
    try:
        services.webhook_urls.check(url)
    except InvalidWebhookUrl as exc:
        raise ProblemError.invalid_field("body.webhook_url", str(exc)) from None


async def job_id_of_path(job_id: Annotated[str, Path(min_length=1, max_length=64)]) -> str:
    """The `{job_id}` of a route about one job, named on every log line of its request. Async,
    so it runs in the request's own context, which the route (and its threadpool calls) then
    inherit; only these routes pay for it."""
    set_job_ids([job_id])
    return job_id


JobId = Annotated[str, Depends(job_id_of_path)]


@router.get(
    "/{job_id}",
    response_model=JobOut,
    responses=problem_responses(401, 404, 429, 503),
    summary="Get a job: status, progress and signed image URLs",
)
async def get_job(
    job_id: JobId,
    request: Request,
    response: Response,
    caller: Reader,
    prefer: Annotated[
        str | None,
        Header(
            description="`wait=N`: hold the response up to N seconds (at most "
            "PREFER_WAIT_MAX_S) until the job has finished (RFC 7240).",
        ),
    ] = None,
) -> Any:
    return await answer_job(
        caller, job_id, str(request.base_url), prefer=prefer, headers=response.headers
    )


async def answer_job(
    caller: Caller,
    job_id: str,
    base_url: str,
    *,
    prefer: str | None,
    headers: Mapping[str, str],
) -> Response:
    """`GET /v1/jobs/{job_id}` once its parameters are read: by this route, or by the hot
    route (api/hot_routes.py). `headers` are those its dependencies set (RateLimit-*)."""
    services = caller.services
    wait_s = _preferred_wait(prefer, services.settings.prefer_wait_max_s)
    answer = _headers(headers)
    if wait_s is None:
        # The common poll: one call reads and renders the job (on the loop where that stays in
        # process, else one threadpool hop), and its JSON goes out as rendered (JobOut is
        # validated once, by the renderer, not again on the way out).
        body = await services.read_lane.run(_rendered, services, caller.owner, job_id, base_url)
        return _json_response(body, answer)
    read_at = time.monotonic()
    job = await services.read_lane.run(services.job_service.get, owner=caller.owner, job_id=job_id)
    answer["Preference-Applied"] = f"wait={wait_s:g}"
    job = await wait_until_finished(services, caller.owner, job, wait_s, read_at=read_at)
    view = await services.view_soon(job, base_url)
    return _json_response(view.model_dump_json().encode(), answer)


def _rendered(services: Services, owner: str, job_id: str, base_url: str) -> bytes:
    job = services.job_service.get(owner=owner, job_id=job_id)
    return services.view(job, base_url).model_dump_json().encode()


def _headers(set_by_dependencies: Mapping[str, str]) -> dict[str, str]:
    """The headers the route's dependencies set (RateLimit-*), for an answer of its own."""
    return {k: v for k, v in set_by_dependencies.items() if k.lower() != "content-length"}


def _json_response(body: bytes, headers: dict[str, str], *, status_code: int = 200) -> Response:
    """`body` (a view serialized once, as rendered: FastAPI would validate it again on the way
    out) as the answer, with `headers`."""
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def _preferred_wait(prefer: str | None, cap: float) -> float | None:
    match = _WAIT.search(prefer or "")
    if match is None:
        return None
    return min(float(match.group(1)), cap)


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    responses=problem_responses(401, 404, 409, 429, 503),
    summary="Cancel a queued or running job",
)
def cancel_job(job_id: JobId, request: Request, caller: Submitter) -> JobOut:
    # The finisher wakes the waiters, publishes the job event and schedules the webhook.
    job = caller.services.job_service.cancel(owner=caller.owner, job_id=job_id)
    return caller.services.view(job, str(request.base_url))
