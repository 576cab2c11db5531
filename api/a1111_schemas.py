"""Bodies of the AUTOMATIC1111 dialect, with the field names, types and defaults of A1111's
own (AUTOMATIC1111/stable-diffusion-webui, `modules/api/models.py`:
`StableDiffusionTxt2ImgProcessingAPI`, generated from the fields of
`StableDiffusionProcessingTxt2Img` in `modules/processing.py`; `TextToImageResponse`,
`ProgressResponse`, `SDModelItem`, `SamplerItem`).

A1111 builds its request model with pydantic's defaults: every field optional, types coerced,
unknown fields dropped without a word. So does this one, so that the payloads A1111 clients
send (every field, most at their defaults) are taken as they are. What each field does here
is in api/a1111_mapping.py and docs/api.md ("AUTOMATIC1111 API"); the value limits are the
native API's, checked there.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

EXAMPLE_TXT2IMG: dict[str, JsonValue] = {
    "prompt": "a lighthouse on a cliff at dawn, oil painting",
    "negative_prompt": "blurry",
    "seed": -1,
    "steps": 20,
    "cfg_scale": 7,
    "width": 512,
    "height": 512,
    "batch_size": 2,
    "n_iter": 1,
    "sampler_name": "Euler",
}

_IGNORED = "Accepted and ignored."
_OFF_ONLY = "Accepted when off (its default); turning it on is a 422: not supported here."


class Txt2ImgIn(BaseModel):
    """A1111's `StableDiffusionProcessingTxt2Img` request, every field of it."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [EXAMPLE_TXT2IMG]})

    # --- mapped onto the job ---
    prompt: str | None = Field(default="", description="`prompt`: 1-1000 characters.")
    negative_prompt: str | None = Field(default="", description="`negative_prompt`; empty: none.")
    seed: int | None = Field(
        default=-1, description="`seed`; -1 or null: random. Image *i* gets `seed + i`."
    )
    steps: int | None = Field(
        default=None, description="`num_inference_steps`; default DEFAULT_STEPS (A1111: 50)."
    )
    cfg_scale: float | None = Field(
        default=None,
        description="`guidance_scale`; default DEFAULT_GUIDANCE_SCALE (A1111: 7).",
    )
    width: int | None = Field(
        default=None, description="`width`, 64-1024 in multiples of 8; default the model's."
    )
    height: int | None = Field(
        default=None, description="`height`, 64-1024 in multiples of 8; default the model's."
    )
    batch_size: int | None = Field(default=1, description="`num_images` = batch_size * n_iter.")
    n_iter: int | None = Field(default=1, description="`num_images` = batch_size * n_iter.")
    sampler_name: str | None = Field(
        default=None,
        description="Any name is accepted; the served scheduler runs (`GET /sdapi/v1/samplers`) "
        "and `info.sampler_name` says which.",
    )
    sampler_index: str | int | None = Field(default="Euler", description="As `sampler_name`.")
    send_images: bool | None = Field(default=True, description="`false`: `images` is empty.")
    override_settings: dict[str, Any] | None = Field(
        default=None,
        description="`sd_model_checkpoint` may name the served model only; other settings "
        "are ignored.",
    )
    # --- features this service does not have: accepted while off ---
    enable_hr: bool | None = Field(default=False, description=_OFF_ONLY)
    restore_faces: bool | None = Field(default=None, description=_OFF_ONLY)
    tiling: bool | None = Field(default=None, description=_OFF_ONLY)
    subseed_strength: float | None = Field(default=0, description="Variation seeds: " + _OFF_ONLY)
    script_name: str | None = Field(default=None, description="Scripts: " + _OFF_ONLY)
    alwayson_scripts: dict[str, Any] | None = Field(
        default_factory=dict, description="Extensions (ControlNet, ...): " + _OFF_ONLY
    )
    refiner_checkpoint: str | None = Field(default=None, description="Refiner: " + _OFF_ONLY)
    infotext: str | None = Field(
        default=None, description="Send the fields themselves: " + _OFF_ONLY
    )
    firstpass_image: str | None = Field(default=None, description=_OFF_ONLY)
    # --- accepted and ignored ---
    styles: list[str] | None = Field(default=None, description=_IGNORED + " (no styles here)")
    subseed: int | None = Field(default=-1, description=_IGNORED)
    seed_resize_from_h: int | None = Field(default=-1, description=_IGNORED)
    seed_resize_from_w: int | None = Field(default=-1, description=_IGNORED)
    scheduler: str | None = Field(default=None, description=_IGNORED)
    do_not_save_samples: bool | None = Field(default=False, description=_IGNORED)
    do_not_save_grid: bool | None = Field(default=False, description=_IGNORED)
    eta: float | None = Field(default=None, description=_IGNORED)
    denoising_strength: float | None = Field(default=0.75, description=_IGNORED)
    s_min_uncond: float | None = Field(default=None, description=_IGNORED)
    s_churn: float | None = Field(default=None, description=_IGNORED)
    s_tmax: float | None = Field(default=None, description=_IGNORED)
    s_tmin: float | None = Field(default=None, description=_IGNORED)
    s_noise: float | None = Field(default=None, description=_IGNORED)
    override_settings_restore_afterwards: bool | None = Field(default=True, description=_IGNORED)
    refiner_switch_at: float | None = Field(default=None, description=_IGNORED)
    disable_extra_networks: bool | None = Field(default=False, description=_IGNORED)
    comments: dict[str, Any] | None = Field(default=None, description=_IGNORED)
    firstphase_width: int | None = Field(default=0, description=_IGNORED)
    firstphase_height: int | None = Field(default=0, description=_IGNORED)
    hr_scale: float | None = Field(default=2.0, description=_IGNORED)
    hr_upscaler: str | None = Field(default=None, description=_IGNORED)
    hr_second_pass_steps: int | None = Field(default=0, description=_IGNORED)
    hr_resize_x: int | None = Field(default=0, description=_IGNORED)
    hr_resize_y: int | None = Field(default=0, description=_IGNORED)
    hr_checkpoint_name: str | None = Field(default=None, description=_IGNORED)
    hr_sampler_name: str | None = Field(default=None, description=_IGNORED)
    hr_scheduler: str | None = Field(default=None, description=_IGNORED)
    hr_prompt: str | None = Field(default="", description=_IGNORED)
    hr_negative_prompt: str | None = Field(default="", description=_IGNORED)
    force_task_id: str | None = Field(default=None, description=_IGNORED)
    script_args: list[Any] | None = Field(default_factory=list, description=_IGNORED)
    save_images: bool | None = Field(
        default=False, description=_IGNORED + " (images are always kept in the blob store)"
    )


class Txt2ImgOut(BaseModel):
    """A1111's `TextToImageResponse`."""

    images: list[str] | None = Field(
        default=None, description="The PNGs, base64-encoded (no `data:` prefix)."
    )
    parameters: dict[str, Any] = Field(
        description="The request as A1111 echoes it: every field, left-out generation "
        "fields at the values the job used."
    )
    info: str = Field(
        description="A JSON document, as A1111's `Processed.js()` writes it: seed, all_seeds, "
        "prompt, all_prompts, width, height, sampler_name, cfg_scale, steps, batch_size, "
        "infotexts, job_timestamp, ...; `job_id` names the native job."
    )


class A1111ProgressState(BaseModel):
    """A1111's `shared.state.dict()`, for the caller's own job."""

    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = Field(default="", description="The native job id (`GET /v1/jobs/{id}`).")
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class A1111ProgressOut(BaseModel):
    """A1111's `ProgressResponse`."""

    progress: float = Field(description="0 to 1.")
    eta_relative: float = Field(description="Seconds left, estimated from the time so far.")
    state: A1111ProgressState
    current_image: str | None = Field(default=None, description="Always null: no previews.")
    textinfo: str | None = None


class SDModelOut(BaseModel):
    """A1111's `SDModelItem`: the one model this service serves."""

    model_config = ConfigDict(protected_namespaces=())

    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class A1111SamplerOut(BaseModel):
    """A1111's `SamplerItem`: the one scheduler the served model runs."""

    name: str
    aliases: list[str]
    options: dict[str, Any]


class A1111OptionsOut(BaseModel):
    """The A1111 options this service has (A1111's `Options` has hundreds; these are fixed)."""

    sd_model_checkpoint: str = Field(description="The served model (`GET /sdapi/v1/sd-models`).")
    samples_format: str = "png"


class A1111ValidationItem(BaseModel):
    """One entry of FastAPI's 422 `detail`, as A1111 answers a bad request."""

    loc: list[str | int]
    msg: str
    type: str


class A1111ErrorOut(BaseModel):
    """Every error on `/sdapi/v1/...`: the keys of A1111's own exception handler
    (`modules/api/api.py`, `api_middleware`), with `detail` a list for a bad request as
    FastAPI's 422 has it, and `code`, the stable code of the native API's problems."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "HTTPException",
                    "detail": "The API key is not valid or has been revoked.",
                    "body": "",
                    "errors": "401: The API key is not valid or has been revoked.",
                    "code": "unauthenticated",
                }
            ]
        }
    )

    error: str = Field(description="`HTTPException`, or `RequestValidationError` for a 422.")
    detail: str | list[A1111ValidationItem]
    body: str = ""
    errors: str
    code: str = Field(description="Stable, machine-readable (docs/api.md, Errors).")
    job_id: str | None = Field(default=None, description="The job the answer is about.")
    limit: int | None = None
    usage: int | None = None
    requested: int | None = None
