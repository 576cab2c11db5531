"""The OpenAI Images API: `POST /v1/images/generations` and `GET /v1/models`, so that
`OpenAI(base_url="https://HOST/v1", api_key=KEY).images.generate(...)` works unchanged.

A generation is an ordinary job of the caller's key (api/job_submission.py): the native API's
validation limits, rate limit, quotas, Idempotency-Key, metrics and traces apply, and the job
shows in `GET /v1/jobs`. The request is held until the job ends, at most SYNC_WAIT_MAX_S; past
that the answer (504) names the job to fetch natively, and a caller that hangs up has its job
canceled. Bodies: api/openai_schemas.py (with OpenAI's reference pages); the translation to
and from a job: api/openai_mapping.py; errors, in OpenAI's shape on these paths:
api/openai_errors.py; the field mapping for users: docs/api.md.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import Reader, Submitter
from api.job_submission import (
    CLIENT_CLOSED_REQUEST,
    CallerGone,
    IdempotencyKeyHeader,
    StillRunning,
    check_idempotency_key,
    run_to_completion,
)
from api.openai_errors import (
    NO_RETRY,
    OpenAIError,
    is_openai_path,
    on_openai_error,
    openai_error_responses,
    render_openai_problem,
)
from api.openai_mapping import ended_without_images, images_out, job_request_for
from api.openai_schemas import ImageGenerationIn, ImagesOut, ModelListOut, ModelOut
from api.problems import register_problem_dialect
from api.wiring import Services
from dal.records import Job, JobStatus

router = APIRouter(prefix="/v1", tags=["openai"])

OWNED_BY = "txt2img"


def install(app: FastAPI) -> None:
    """Serve the dialect on `app`: its routes, and every error on its paths in its shape."""
    app.include_router(router)
    register_problem_dialect(app, is_openai_path, render_openai_problem)
    app.add_exception_handler(OpenAIError, on_openai_error)
    app.state.openai_models_created = int(time.time())


@router.post(
    "/images/generations",
    response_model=ImagesOut,
    response_model_exclude_none=True,
    responses=openai_error_responses(400, 401, 404, 409, 413, 415, 429, 500, 503, 504, "4XX"),
    summary="Create images (OpenAI Images API): a job of your key, answered when it ends",
)
async def create_images(
    body: Annotated[ImageGenerationIn, Body()],
    request: Request,
    response: Response,
    caller: Submitter,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Any:
    services = caller.services
    job_request = job_request_for(body, served_model=services.job_service.model_id)
    try:
        job = await run_to_completion(
            services,
            caller.principal,
            job_request,
            caller=request,
            idempotency_key=check_idempotency_key(idempotency_key),
        )
    except StillRunning as still:
        url = _job_url(request, still.job)
        raise OpenAIError(
            504,
            f"Job {still.job.id} is still {still.job.status.value} after {still.waited_s:g} s; "
            f"it goes on: GET {url} with the same API key for its images.",
            code="job_still_running",
            headers={**NO_RETRY, "Location": url},
        ) from None
    except CallerGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    url = _job_url(request, job)
    if job.status != JobStatus.SUCCEEDED:
        raise ended_without_images(job, url)
    response.headers["Location"] = url
    return await run_in_threadpool(
        images_out, services, job, body.response_format or "url", str(request.base_url)
    )


def _job_url(request: Request, job: Job) -> str:
    return str(request.url_for("get_job", job_id=job.id))


@router.get(
    "/models",
    response_model=ModelListOut,
    responses=openai_error_responses(401, 429, 503),
    summary="The served model (OpenAI Models API)",
)
def list_models(request: Request, caller: Reader) -> ModelListOut:
    return ModelListOut(data=[_served_model(request, caller.services)])


@router.get(
    "/models/{model:path}",
    response_model=ModelOut,
    responses=openai_error_responses(401, 404, 429, 503, "4XX"),
    summary="One served model (OpenAI Models API)",
)
def retrieve_model(model: str, request: Request, caller: Reader) -> ModelOut:
    served = _served_model(request, caller.services)
    if model != served.id:
        raise OpenAIError(
            404, f"The model {model!r} does not exist here.", code="model_not_found", param="model"
        )
    return served


def _served_model(request: Request, services: Services) -> ModelOut:
    created = int(getattr(request.app.state, "openai_models_created", 0))
    return ModelOut(id=services.job_service.model_id, created=created, owned_by=OWNED_BY)
