"""What a job runner asks of an image generator, independent of torch.

The runner talks to this Protocol; `gpu_worker.engine.DiffusionEngine` is the real
implementation, and tests may use any other generator that keeps the same promises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# Called after each denoising step with (steps_done, steps_total). It may raise to stop the
# generation (the runner raises JobCanceled this way); the exception propagates out of generate().
StepCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    # One seed per image: image i is generated from seeds[i] alone, so a job's images do not
    # depend on how many images were asked for or what else shared the batch.
    seeds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    png: bytes
    width: int
    height: int
    seed: int


class GenerationError(Exception):
    """A generation failed. `code` is machine-readable; `retryable` says whether trying again
    later (another instance, more memory free) could succeed."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class ImageGenerator(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def default_size(self) -> tuple[int, int]:
        """(width, height) the model was trained for."""
        ...

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None
    ) -> list[GeneratedImage]: ...
