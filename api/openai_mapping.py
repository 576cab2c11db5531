"""The OpenAI Images dialect's translation, with no HTTP in it: an OpenAI request to the native
job it stands for (under JobCreate's own limits, so the two APIs cannot drift apart), and a
job that has ended to OpenAI's answer or error.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from pydantic import ValidationError

from api.job_service import JobRequest
from api.openai_errors import NO_RETRY, OpenAIError
from api.openai_schemas import ImageDataOut, ImageGenerationIn, ImagesOut
from api.problems import ProblemError
from api.schemas import JobCreate
from api.wiring import Services
from dal.records import Job, JobStatus

_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
# JobCreate's fields, as the OpenAI request names them.
_PARAMS = {"prompt": "prompt", "num_images": "n", "width": "size", "height": "size"}


def job_request_for(body: ImageGenerationIn, *, served_model: str) -> JobRequest:
    """The native job an OpenAI request stands for, under JobCreate's own limits."""
    if body.stream:
        raise _unsupported("stream", "streaming is not supported; leave it out or false")
    if body.output_format not in (None, "png"):
        raise _unsupported("output_format", f"images are PNG; {body.output_format!r} is not")
    if body.background == "transparent":
        raise _unsupported("background", "images are opaque; use opaque or auto")
    if body.model is not None and body.model != served_model:
        raise OpenAIError(
            404,
            f"The model {body.model!r} does not exist here; this service serves "
            f"{served_model!r} (GET /v1/models).",
            code="model_not_found",
            param="model",
        )
    width, height = _size(body.size)
    fields: dict[str, Any] = {"prompt": body.prompt, "width": width, "height": height}
    if body.n is not None:
        fields["num_images"] = body.n
    try:
        valid = JobCreate.model_validate(fields)
    except ValidationError as exc:
        raise _invalid(exc, body.size) from None
    return JobRequest(**valid.model_dump())


def _size(size: str | None) -> tuple[int | None, int | None]:
    if size is None or size == "auto":
        return None, None  # the model's own size
    match = _SIZE.fullmatch(size)
    if match is None:
        raise ProblemError.invalid_field(
            "body.size", f"{size!r} is not WIDTHxHEIGHT (e.g. 512x512) or auto"
        )
    return int(match[1]), int(match[2])


def _invalid(exc: ValidationError, size: str | None) -> ProblemError:
    errors = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if name in ("width", "height"):
            message = f"{size!r} is not a supported size ({name}: {message})"
        errors.append({"field": f"body.{_PARAMS.get(name, name)}", "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return ProblemError("validation-error", detail, errors=errors)


def _unsupported(param: str, why: str) -> OpenAIError:
    return OpenAIError(400, f"{param}: {why}", code="unsupported_value", param=param)


def ended_without_images(job: Job, url: str) -> OpenAIError:
    """The answer to a call whose job failed or was canceled: never retried by the SDK (a
    retry would be a new job)."""
    headers = {**NO_RETRY, "Location": url}
    if job.status == JobStatus.CANCELED:
        message = f"Job {job.id} was canceled before it ended ({url})."
        return OpenAIError(409, message, code="job_canceled", headers=headers)
    reason = f"{job.error.code}: {job.error.message}" if job.error else "no reason recorded"
    message = f"Job {job.id} failed ({reason}); see {url}."
    return OpenAIError(500, message, code="job_failed", headers=headers)


def images_out(services: Services, job: Job, response_format: str, base_url: str) -> ImagesOut:
    """OpenAI's ImagesResponse for a succeeded job. Blocks (blob reads, URL signing)."""
    if response_format == "b64_json":
        data = [
            ImageDataOut(b64_json=base64.b64encode(services.blobs.get(ref.key)).decode("ascii"))
            for ref in job.images
        ]
    else:
        # Signed and absolute, as GET /v1/jobs/{id} renders them.
        data = [ImageDataOut(url=image.url) for image in services.view(job, base_url).images]
    ended = job.finished_at or job.updated_at
    return ImagesOut(created=int(ended.timestamp()), data=data)
