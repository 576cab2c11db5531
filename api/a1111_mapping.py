"""An AUTOMATIC1111 txt2img request as an ordinary job, and the job as A1111 answers it.

The mapping (docs/api.md, "AUTOMATIC1111 API", has the table): prompt, negative_prompt,
width, height, steps (`num_inference_steps`), cfg_scale (`guidance_scale`), seed (-1: random)
and batch_size * n_iter (`num_images`) become the job's parameters, checked by the native
request schema itself (api/schemas.py `JobCreate`), so the limits and their messages are the
native API's; a field at fault is named as the A1111 client sent it. Features this service
does not have are refused while switched on, never silently dropped; knobs that only tune a
sampler are accepted and ignored.

What comes back follows A1111's `text2imgapi` (`modules/api/api.py`): `parameters` echoes
the request, `info` is `Processed.js()` of `modules/processing.py` as a JSON string. A1111
seeds a batch consecutively (`all_seeds = [seed + i ...]`), as the native job does
(`JobParams.image_seeds`), so `all_seeds` is the job's own.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from api.a1111_schemas import A1111SamplerOut, Txt2ImgIn
from api.job_service import JobRequest
from api.problems import ProblemError
from api.schemas import JobCreate
from dal.records import Job
from gpu_worker.model_folder import read_scheduler_class

# Native field -> the A1111 field a client names it by.
_A1111_NAMES = {
    "num_inference_steps": "steps",
    "guidance_scale": "cfg_scale",
    "num_images": "batch_size",
}
_NO_REFINER = (None, "", "None", "none")  # what A1111 itself reads as "no refiner"


def to_job_request(body: Txt2ImgIn, *, served_model: str) -> JobRequest:
    """The job the request asks for; raises a 422 ProblemError naming every field at fault."""
    counts = _counts(body)
    errors = _unsupported(body, served_model) + counts
    native = {
        "prompt": body.prompt or "",
        "negative_prompt": body.negative_prompt or None,
        "width": body.width,
        "height": body.height,
        "num_inference_steps": body.steps,
        "guidance_scale": body.cfg_scale,
        "seed": None if body.seed in (None, -1) else body.seed,
        "num_images": images_requested(body),
    }
    try:
        checked = JobCreate.model_validate(native)
    except ValidationError as exc:
        # A count below 1 is named once, as the field the client sent.
        errors += [
            _field_error(e, body) for e in exc.errors() if not (counts and _is_num_images(e))
        ]
        raise _problem(errors) from None
    if errors:
        raise _problem(errors)
    return JobRequest(**checked.model_dump())


def images_requested(body: Txt2ImgIn) -> int:
    return (body.batch_size or 1) * (body.n_iter or 1)


def _unsupported(body: Txt2ImgIn, served_model: str) -> list[dict[str, str]]:
    switched_on = {
        "enable_hr": ("hires fix", body.enable_hr),
        "restore_faces": ("face restoration", body.restore_faces),
        "tiling": ("tiling", body.tiling),
        "subseed_strength": ("variation seeds", body.subseed_strength),
        "script_name": ("scripts", body.script_name),
        "alwayson_scripts": ("always-on scripts (extensions)", body.alwayson_scripts),
        "refiner_checkpoint": ("a refiner", body.refiner_checkpoint not in _NO_REFINER),
        "infotext": ("infotext (send the fields themselves)", body.infotext),
        "firstpass_image": ("a first-pass image", body.firstpass_image),
    }
    errors = [
        {"field": f"body.{name}", "message": f"{feature} is not supported here"}
        for name, (feature, value) in switched_on.items()
        if value
    ]
    checkpoint = (body.override_settings or {}).get("sd_model_checkpoint")
    if checkpoint not in (None, "", served_model):
        errors.append(
            {
                "field": "body.override_settings.sd_model_checkpoint",
                "message": f"this service serves {served_model!r} only",
            }
        )
    return errors


def _counts(body: Txt2ImgIn) -> list[dict[str, str]]:
    return [
        {"field": f"body.{name}", "message": "must be at least 1"}
        for name, value in (("batch_size", body.batch_size), ("n_iter", body.n_iter))
        if value is not None and value < 1
    ]


def _native_field(error: Any) -> str:
    return str(error["loc"][0]) if error.get("loc") else ""


def _is_num_images(error: Any) -> bool:
    return _native_field(error) == "num_images"


def _field_error(error: Any, body: Txt2ImgIn) -> dict[str, str]:
    native = _native_field(error)
    name = _A1111_NAMES.get(native, native)
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if native == "num_images":
        message = f"batch_size * n_iter is {images_requested(body)}: {message}"
    elif native == "seed":
        message = f"-1 for a random seed, else {message[0].lower()}{message[1:]}"
    return {"field": f"body.{name}", "message": message}


def _problem(errors: list[dict[str, str]]) -> ProblemError:
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return ProblemError("validation-error", detail, errors=errors)


def echoed_parameters(body: Txt2ImgIn, job: Job) -> dict[str, Any]:
    """The request as A1111 echoes it (every field); a generation field left out shows the
    value the job used, where A1111 would show its own default."""
    echoed = body.model_dump()
    used = {
        "width": job.params.width,
        "height": job.params.height,
        "steps": job.params.num_inference_steps,
        "cfg_scale": job.params.guidance_scale,
    }
    for name, value in used.items():
        if echoed[name] is None:
            echoed[name] = value
    return echoed


def info_document(body: Txt2ImgIn, job: Job, *, sampler: str, version: str) -> str:
    """`Processed.js()`: the settings and seeds of what ran, as a JSON string."""
    p = job.params
    seeds = list(p.image_seeds())
    count = len(seeds)
    negative = p.negative_prompt or ""
    infotexts = [_infotext(job, seed=seed, sampler=sampler, version=version) for seed in seeds]
    document = {
        "prompt": p.prompt,
        "all_prompts": [p.prompt] * count,
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * count,
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * count,
        "subseed_strength": 0,
        "width": p.width,
        "height": p.height,
        "sampler_name": sampler,
        "cfg_scale": p.guidance_scale,
        "steps": p.num_inference_steps,
        "batch_size": body.batch_size or 1,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": job.model,
        "sd_model_hash": None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": None,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": job_timestamp(job),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": version,
        "job_id": job.id,
    }
    return json.dumps(document)


def job_timestamp(job: Job) -> str:
    """A1111's `state.job_timestamp`: when the job began, `%Y%m%d%H%M%S` (here in UTC)."""
    return job.created_at.strftime("%Y%m%d%H%M%S")


def _infotext(job: Job, *, seed: int, sampler: str, version: str) -> str:
    """One image's A1111 infotext (`create_infotext`): prompt, negative prompt, settings."""
    p = job.params
    settings = {
        "Steps": p.num_inference_steps,
        "Sampler": sampler,
        "CFG scale": p.guidance_scale,
        "Seed": seed,
        "Size": f"{p.width}x{p.height}",
        "Model": job.model,
        "Version": version,
    }
    line = ", ".join(f"{key}: {_quote(value)}" for key, value in settings.items())
    negative = f"\nNegative prompt: {p.negative_prompt}" if p.negative_prompt else ""
    return f"{p.prompt}{negative}\n{line}".strip()


def _quote(value: object) -> str:
    """A1111's `infotext_utils.quote`: JSON-quoted when it holds a separator."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


# diffusers scheduler class -> the A1111 sampler that is the same algorithm.
_A1111_SAMPLERS = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "UniPCMultistepScheduler": "UniPC",
}


@lru_cache(maxsize=8)
def served_sampler(model_path: Path) -> A1111SamplerOut:
    """The one sampler there is: the scheduler of the model folder, by its A1111 name where
    A1111 has one; `Default` where this process cannot read the folder (workers elsewhere)."""
    scheduler = read_scheduler_class(model_path)
    if scheduler is None:
        return A1111SamplerOut(name="Default", aliases=["default"], options={})
    name = _A1111_SAMPLERS.get(scheduler, scheduler)
    return A1111SamplerOut(name=name, aliases=[scheduler], options={"scheduler": scheduler})
