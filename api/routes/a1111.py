"""The AUTOMATIC1111 web UI API (`/sdapi/v1`), the part its clients use to generate: txt2img and
what is called around it (models, options, samplers, progress, interrupt).

Shapes, names and defaults are A1111's own: AUTOMATIC1111/stable-diffusion-webui
`modules/api/api.py` (routes, `text2imgapi`, `progressapi`, `interruptapi`, `set_config`,
`api_middleware`; read at commit 2fec94710bbba31b282fe123b198068aef38df21, v1.10) and
`modules/api/models.py` (request and response models), with `modules/processing.py`
(`StableDiffusionProcessingTxt2Img`, `Processed.js`) and `modules/shared_state.py`
(`State.dict`). Clients: webuiapi, Open WebUI, SillyTavern, Krita plugins.

One engine: every txt2img call is an ordinary job of the caller's key (api/job_submission.py
`run_to_completion`), under the native limits, rate limits, quotas and Idempotency-Key, listed
by `GET /v1/jobs`; the answer holds the PNGs read back from the blob store. A caller that
hangs up gets its job canceled; a job that outlasts SYNC_WAIT_MAX_S is answered `504` with its
id, to fetch natively. Callers authenticate with HTTP Basic (an API key as the password, as
A1111's `--api-auth` clients send it) or Bearer; errors come in A1111's shape
(api/a1111_errors.py).
"""

from __future__ import annotations

import base64
import logging
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Query, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.a1111_errors import (
    a1111_error_responses,
    is_a1111_path,
    render_a1111_problem,
)
from api.a1111_mapping import (
    echoed_parameters,
    info_document,
    job_timestamp,
    served_sampler,
    to_job_request,
)
from api.a1111_schemas import (
    A1111OptionsOut,
    A1111ProgressOut,
    A1111ProgressState,
    A1111SamplerOut,
    SDModelOut,
    Txt2ImgIn,
    Txt2ImgOut,
)
from api.a1111_sync_jobs import current_job, interrupt, remember
from api.deps import BasicOrBearerReader, BasicOrBearerSubmitter
from api.job_submission import (
    CLIENT_CLOSED_REQUEST,
    CallerGone,
    IdempotencyKeyHeader,
    StillRunning,
    check_idempotency_key,
    run_to_completion,
)
from api.problems import ProblemError, register_problem_dialect
from api.wiring import Services
from dal.records import Job, JobStatus, utcnow

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"])
log = logging.getLogger(__name__)


def install(app: FastAPI) -> None:
    """Serve the dialect on `app`: its routes, and its errors in A1111's shape."""
    app.include_router(router)
    register_problem_dialect(app, is_a1111_path, render_a1111_problem)


@router.post(
    "/txt2img",
    response_model=Txt2ImgOut,
    responses=a1111_error_responses(400, 401, 413, 415, 429, 500, 503, 504),
    summary="AUTOMATIC1111 txt2img: generate and answer with the images",
)
async def txt2img(
    body: Annotated[Txt2ImgIn, Body()],
    request: Request,
    response: Response,
    caller: BasicOrBearerSubmitter,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Txt2ImgOut | Response:
    services = caller.services
    job_request = to_job_request(body, served_model=services.job_service.model_id)
    try:
        job = await run_to_completion(
            services,
            caller.principal,
            job_request,
            caller=request,
            idempotency_key=check_idempotency_key(idempotency_key),
            on_submitted=partial(remember, services),
        )
    except StillRunning as still:
        return _still_running(still, request, response)
    except CallerGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if job.status == JobStatus.FAILED:
        reason = f"{job.error.code}: {job.error.message}" if job.error else "no reason recorded"
        raise ProblemError(
            "internal-error", f"Job {job.id} failed ({reason}).", extensions={"job_id": job.id}
        )
    # Canceled (interrupted) jobs answer as A1111 does after an interrupt: without images.
    wanted = job.status == JobStatus.SUCCEEDED and body.send_images is not False
    images = await run_in_threadpool(_read_images, services, job) if wanted else []
    sampler = served_sampler(services.settings.resolved_model_path).name
    return Txt2ImgOut(
        images=images,
        parameters=echoed_parameters(body, job),
        info=info_document(body, job, sampler=sampler, version=request.app.version),
    )


def _read_images(services: Services, job: Job) -> list[str]:
    return [base64.b64encode(services.blobs.get(ref.key)).decode("ascii") for ref in job.images]


def _still_running(still: StillRunning, request: Request, response: Response) -> Response:
    """504, as a gateway whose upstream (the GPU worker) has not answered in time; the job
    goes on, and `job_id` and `Location` name it. No Retry-After: a retry is a new job."""
    job = still.job
    location = str(request.url_for("get_job", job_id=job.id))
    detail = (
        f"Job {job.id} is still {job.status.value} after {still.waited_s:g} s; it goes on: "
        f"GET {location} with the same API key for its images."
    )
    body = {
        "error": "HTTPException",
        "detail": detail,
        "body": "",
        "errors": f"504: {detail}",
        "code": "job-still-running",
        "job_id": job.id,
    }
    return JSONResponse(
        body,
        status_code=status.HTTP_504_GATEWAY_TIMEOUT,
        headers={**response.headers, "Location": location},
    )


@router.get(
    "/sd-models",
    response_model=list[SDModelOut],
    responses=a1111_error_responses(401, 429, 503),
    summary="The served model, as A1111 lists checkpoints",
)
def sd_models(caller: BasicOrBearerReader) -> list[SDModelOut]:
    model = caller.services.job_service.model_id
    return [SDModelOut(title=model, model_name=model, filename=model)]


@router.get(
    "/options",
    response_model=A1111OptionsOut,
    responses=a1111_error_responses(401, 429, 503),
    summary="A1111 options: the served checkpoint",
)
def get_options(caller: BasicOrBearerReader) -> A1111OptionsOut:
    return A1111OptionsOut(sd_model_checkpoint=caller.services.job_service.model_id)


@router.post(
    "/options",
    response_model=None,
    responses={
        200: {
            "description": "Nothing to change: the options asked for are those in force.",
            "content": {"application/json": {"schema": {"type": "null"}}},
        },
        **a1111_error_responses(400, 401, 413, 415, 429, 503),
    },
    summary="Set A1111 options: only the served checkpoint, as a no-op",
)
def set_options(body: Annotated[dict[str, Any], Body()], caller: BasicOrBearerReader) -> None:
    model = caller.services.job_service.model_id
    errors = [
        {
            "field": f"body.{key}",
            "message": f"this service serves {model!r} only"
            if key == "sd_model_checkpoint"
            else "options are set by this service's operator, not through the API",
        }
        for key, value in body.items()
        if not (key == "sd_model_checkpoint" and value == model)
    ]
    if errors:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise ProblemError("validation-error", detail, errors=errors)


@router.get(
    "/samplers",
    response_model=list[A1111SamplerOut],
    responses=a1111_error_responses(401, 429, 503),
    summary="The one sampler: the served model's scheduler",
)
def samplers(caller: BasicOrBearerReader) -> list[A1111SamplerOut]:
    return [served_sampler(caller.services.settings.resolved_model_path)]


@router.get(
    "/progress",
    response_model=A1111ProgressOut,
    responses=a1111_error_responses(401, 429, 503),
    summary="Progress of your own txt2img call in flight",
)
def progress(
    caller: BasicOrBearerReader,
    skip_current_image: Annotated[
        bool, Query(description="Accepted; there are no previews (`current_image` is null).")
    ] = False,
) -> A1111ProgressOut:
    job = current_job(caller.services, caller.owner)
    if job is None:
        return A1111ProgressOut(progress=0, eta_relative=0, state=A1111ProgressState())
    steps = job.params.num_inference_steps
    elapsed = (utcnow() - job.started_at).total_seconds() if job.started_at else 0.0
    eta = elapsed / job.progress - elapsed if job.progress > 0 else 0.0
    return A1111ProgressOut(
        progress=job.progress,
        eta_relative=max(0.0, eta),
        state=A1111ProgressState(
            job=job.id,
            job_count=1,
            job_timestamp=job_timestamp(job),
            sampling_step=round(job.progress * steps),
            sampling_steps=steps,
        ),
    )


@router.post(
    "/interrupt",
    response_model=dict[str, Any],
    responses=a1111_error_responses(401, 429, 503),
    summary="Cancel your own txt2img calls in flight",
)
def interrupt_own_calls(caller: BasicOrBearerSubmitter) -> dict[str, Any]:
    canceled = interrupt(caller.services, caller.owner)
    log.info("interrupt: %d job(s) of %s canceled", len(canceled), caller.owner)
    return {}
