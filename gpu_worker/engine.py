"""The real `ImageGenerator`: a diffusers pipeline loaded from a local folder.

One engine owns one pipeline on one device. Loading is explicit (`load()`, called from the
worker's startup) and happens once; `generate()` calls are serialised, because a pipeline keeps
per-call state (scheduler timesteps, guidance settings) and a GPU runs one batch at a time anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dal.errors import GenerationError, GeneratorUnavailable
from dal.records import GeneratedImage, GenerationRequest, StepCallback
from gpu_worker.images import split_by_request
from gpu_worker.model_folder import absent_optional_components, load_variant

log = logging.getLogger(__name__)

# torch.Generator.manual_seed accepts any unsigned 64-bit value.
_MAX_SEED = 2**64 - 1
_WARM_UP_GUIDANCE = 7.5  # > 1, so warm-up takes the classifier-free-guidance path real jobs take


class DiffusionEngine:
    """Generates images with a diffusers pipeline saved in `model_path` (never the hub)."""

    max_in_flight = 1  # one pipeline call at a time (see the module docstring)

    def __init__(
        self,
        model_path: Path,
        *,
        model_id: str | None = None,
        device: str | None = None,
        compile_unet: bool = False,
        vae_slicing_min_batch: int = 4,
    ) -> None:
        self.model_path = Path(model_path)
        self._model_id = model_id or self.model_path.name
        self.device: str = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # Half precision halves memory and time on a GPU; CPUs lack fast fp16 kernels.
        self.dtype: Any = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.compile_unet = compile_unet
        self.vae_slicing_min_batch = vae_slicing_min_batch
        self.load_seconds: float = 0.0  # set by load(); 0.0 until then
        self.warm_up_seconds: float = 0.0  # set by warm_up()
        self._pipeline: Any = None
        self._closed = False
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def default_size(self) -> tuple[int, int]:
        """(width, height) the model was trained for; loads the pipeline if needed."""
        pipeline = self.load()
        sample_size = pipeline.unet.config.sample_size
        # Most UNets store one int; some (non-square models) store (height, width).
        if isinstance(sample_size, int):
            latent_height = latent_width = sample_size
        else:
            latent_height, latent_width = sample_size
        scale = int(pipeline.vae_scale_factor)
        return int(latent_width) * scale, int(latent_height) * scale

    def check_ready(self) -> None:
        """Ready from load() (the worker loads before it serves) until close()."""
        if self._closed:
            raise GeneratorUnavailable("the model was released (the engine is closed)")
        if self._pipeline is None:
            raise GeneratorUnavailable("the model is not loaded yet")

    def close(self) -> None:
        """Release the pipeline (after the call in progress, if any), so that its memory can
        go; the engine cannot load it again."""
        with self._load_lock, self._generate_lock:
            self._closed = True
            self._pipeline = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def load(self) -> Any:
        """Load the pipeline onto the device once; later (or concurrent) calls return it."""
        with self._load_lock:
            if self._closed:
                raise GenerationError("shutting_down", "the engine is closed", retryable=True)
            if self._pipeline is None:
                started = time.perf_counter()
                self._pipeline = self._load_pipeline()
                self.load_seconds = time.perf_counter() - started
            return self._pipeline

    def _load_pipeline(self) -> Any:
        # Before diffusers imports transformers: silences the "requires torchvision" notices.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import diffusers
        from diffusers.utils import logging as diffusers_logging
        from packaging.version import Version
        from transformers.utils import logging as transformers_logging

        # diffusers 0.42 renamed torch_dtype to dtype (the old name warns); older ones only
        # know torch_dtype.
        dtype_arg = "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"
        # The loading bars are noise in a worker's logs; restore them afterwards so we do not
        # change the process-wide setting for anyone else.
        restore = [
            module
            for module in (diffusers_logging, transformers_logging)
            if module.is_progress_bar_enabled()
        ]
        for module in restore:
            module.disable_progress_bar()
        try:
            pipeline = diffusers.DiffusionPipeline.from_pretrained(
                self.model_path,
                local_files_only=True,
                **{dtype_arg: self.dtype},
                **self.load_options(),
            )
        finally:
            for module in restore:
                module.enable_progress_bar()
        pipeline = pipeline.to(self.device)
        pipeline.set_progress_bar_config(disable=True)
        if self.device.startswith("cuda"):
            self._optimise_for_cuda(pipeline)
        return pipeline

    def load_options(self) -> dict[str, Any]:
        """`from_pretrained` arguments that depend on what the folder holds (besides the
        dtype): the fp16 weight variant when the folder has it (gpu_worker.model_folder
        .load_variant), and None for the components the engine never uses that the folder
        leaves out although model_index.json names them (the safety checker and its image
        processor, in the deploy runbook's download)."""
        options: dict[str, Any] = {}
        variant = load_variant(self.model_path, half_precision=self.dtype == torch.float16)
        if variant is not None:
            options["variant"] = variant
        absent = absent_optional_components(self.model_path)
        options.update(dict.fromkeys(absent))
        if "safety_checker" in absent:
            # Without it diffusers logs a long warning on every load; say it once, plainly.
            options["requires_safety_checker"] = False
            log.info("%s has no safety_checker: generated images are not filtered", self.model_path)
        return options

    def _optimise_for_cuda(self, pipeline: Any) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        # Scaled-dot-product attention (flash / memory-efficient kernels) and channels-last
        # convolutions are the cheap wins on NVIDIA GPUs.
        pipeline.unet.set_attn_processor(AttnProcessor2_0())
        pipeline.unet.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
        torch.backends.cuda.matmul.allow_tf32 = True
        if self.compile_unet:
            # Slow first calls (minutes), faster steady state; warm-up pays the compile.
            pipeline.unet = torch.compile(pipeline.unet, mode="reduce-overhead", fullgraph=False)

    def warm_up(self) -> float:
        """Run one 1-step generation at the default size to pay first-call costs (kernel
        selection, allocator growth) before the first job; returns the seconds it took."""
        width, height = self.default_size
        started = time.perf_counter()
        self.generate(
            GenerationRequest(
                prompt="warm-up",
                negative_prompt=None,
                width=width,
                height=height,
                num_inference_steps=1,
                guidance_scale=_WARM_UP_GUIDANCE,
                seeds=(0,),
            )
        )
        self.warm_up_seconds = time.perf_counter() - started
        return self.warm_up_seconds

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None
    ) -> list[GeneratedImage]:
        """Generate one PNG per seed, in seed order.

        Raises GenerationError for invalid parameters (not retryable) and out-of-memory
        (retryable); whatever `on_step` raises propagates unchanged.
        """
        return self.generate_batch([request], on_step=on_step)[0]

    def generate_batch(
        self, requests: Sequence[GenerationRequest], on_step: StepCallback | None = None
    ) -> list[list[GeneratedImage]]:
        """Generate several requests in ONE pipeline call; they must share size, steps and
        guidance (prompts, negative prompts and seeds may differ). Returns each request's
        images in its seed order. Every image has its own generator, so it depends on its own
        seed only (batched and single runs differ by float noise, ~1e-6)."""
        return split_by_request(requests, self.run_pipeline(requests, on_step=on_step))

    def run_pipeline(
        self, requests: Sequence[GenerationRequest], on_step: StepCallback | None = None
    ) -> list[Any]:
        """The pipeline call alone (PIL images out, no encoding): what benchmarks call the
        limit."""
        if not requests:
            return []
        for request in requests:
            _check_request(request)
        first = requests[0]
        if any(r.batch_shape != first.batch_shape for r in requests):
            raise ValueError("requests in one batch must share size, steps and guidance")
        pipeline = self.load()
        raised_by_on_step: list[BaseException] = []

        def on_step_end(
            pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            if on_step is not None:
                try:
                    on_step(step_index + 1, int(pipe.num_timesteps))
                except BaseException as exc:
                    # Remembered so that the handler below lets it through untouched, even
                    # when it happens to be a ValueError or RuntimeError.
                    raised_by_on_step.append(exc)
                    raise
            return callback_kwargs

        # One row per image: prompts repeat for each of a request's seeds.
        prompts = [r.prompt for r in requests for _ in r.seeds]
        negatives = [r.negative_prompt or "" for r in requests for _ in r.seeds]
        seeds = [seed for r in requests for seed in r.seeds]
        with self._generate_lock:
            # One generator per image: image i depends on seeds[i] alone, not on the batch.
            generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
            self._configure_vae(pipeline, len(seeds))
            try:
                with torch.inference_mode():
                    output = pipeline(
                        prompt=prompts,
                        # An empty negative prompt is what the pipeline uses for None.
                        negative_prompt=negatives if any(negatives) else None,
                        width=first.width,
                        height=first.height,
                        num_inference_steps=first.num_inference_steps,
                        guidance_scale=first.guidance_scale,
                        num_images_per_prompt=1,
                        generator=generators,
                        callback_on_step_end=on_step_end,
                    )
            except Exception as exc:
                if any(exc is raised for raised in raised_by_on_step):
                    raise
                error = self._classify(exc, len(seeds), first)
                if error is None:
                    raise
                raise error from exc
        return list(output.images)

    def _configure_vae(self, pipeline: Any, batch_images: int) -> None:
        # Decoding a large batch at once is the memory peak; slicing trades a little time.
        vae = pipeline.vae
        if not hasattr(vae, "enable_slicing"):
            return
        if batch_images >= self.vae_slicing_min_batch:
            vae.enable_slicing()
        else:
            vae.disable_slicing()

    def _classify(
        self, exc: Exception, images: int, request: GenerationRequest
    ) -> GenerationError | None:
        """Map a pipeline failure to a GenerationError, or None to let it propagate as is."""
        if isinstance(exc, torch.cuda.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
        ):
            # The traceback's frames still reference the batch's tensors: drop them first, or
            # empty_cache() cannot hand their memory back.
            traceback.clear_frames(exc.__traceback__)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return GenerationError(
                "out_of_memory",
                f"out of memory generating {images} image(s) at "
                f"{request.width}x{request.height} on {self.device}",
                retryable=True,
            )
        if isinstance(exc, ValueError):
            # The pipeline validates its inputs with ValueError (e.g. size not divisible by 8).
            return GenerationError("invalid_parameters", str(exc), retryable=False)
        return None


def _check_request(request: GenerationRequest) -> None:
    """Reject what the pipeline would fail on obscurely (or not at all)."""
    problems = []
    if not request.seeds:
        problems.append("at least one seed is required")
    if any(not 0 <= seed <= _MAX_SEED for seed in request.seeds):
        problems.append(f"seeds must be between 0 and {_MAX_SEED}")
    if request.num_inference_steps < 1:
        problems.append("num_inference_steps must be at least 1")
    if request.width < 1 or request.height < 1:
        problems.append("width and height must be positive")
    if problems:
        raise GenerationError("invalid_parameters", "; ".join(problems), retryable=False)
