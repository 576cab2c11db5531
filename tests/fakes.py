"""A deterministic stand-in for the diffusion engine, for tests that are not about pixels.

It keeps the ImageGenerator promises that the runner relies on: one image per seed, the
requested size, identical bytes for identical inputs, on_step called after every step (and
allowed to raise to stop the generation).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from PIL import Image

from dal.errors import GenerationError, GeneratorUnavailable
from dal.records import GeneratedImage, GenerationRequest, StepCallback


class PatternGenerator:
    model_id = "pattern-test-model"
    default_size = (64, 64)
    max_in_flight = 1  # as a BatchEngine: one call at a time

    def __init__(self) -> None:
        self.calls: list[GenerationRequest] = []
        self.fail_with: GenerationError | None = None
        # Set to make generate() wait between steps until released (to cancel mid-run).
        self.step_gate: threading.Event | None = None
        self.started = threading.Event()
        self.batches: list[list[GenerationRequest]] = []
        # Prompts that make a whole batch fail (as a pipeline ValueError would).
        self.poison_prompts: set[str] = set()
        # Set to a reason to make check_ready() fail with it.
        self.unavailable: str | None = None
        self.closed = False

    @contextmanager
    def arriving(self) -> Iterator[None]:
        yield

    def check_ready(self) -> None:
        if self.unavailable is not None:
            raise GeneratorUnavailable(self.unavailable)

    def close(self) -> None:
        self.closed = True

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None
    ) -> list[GeneratedImage]:
        self.calls.append(request)
        self.started.set()
        for step in range(1, request.num_inference_steps + 1):
            if self.step_gate is not None:
                self.step_gate.wait(timeout=10)
            if on_step is not None:
                on_step(step, request.num_inference_steps)
        if self.fail_with is not None:
            raise self.fail_with
        return [self._image(request, seed) for seed in request.seeds]

    def generate_batch(
        self, requests: Sequence[GenerationRequest], on_step: StepCallback | None = None
    ) -> list[list[GeneratedImage]]:
        """The BatchEngine surface: one call, shared steps, images per request."""
        self.batches.append(list(requests))
        self.started.set()
        steps = requests[0].num_inference_steps
        for step in range(1, steps + 1):
            if self.step_gate is not None:
                self.step_gate.wait(timeout=10)
            if on_step is not None:
                on_step(step, steps)
        if self.fail_with is not None:
            raise self.fail_with
        bad = [r for r in requests if r.prompt in self.poison_prompts]
        if bad:
            raise GenerationError("invalid_parameters", "poisoned prompt", retryable=False)
        return [[self._image(r, seed) for seed in r.seeds] for r in requests]

    @staticmethod
    def _image(request: GenerationRequest, seed: int) -> GeneratedImage:
        digest = hashlib.sha256(f"{request.prompt}|{seed}".encode()).digest()
        image = Image.new("RGB", (request.width, request.height), tuple(digest[:3]))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return GeneratedImage(
            png=buffer.getvalue(), width=request.width, height=request.height, seed=seed
        )
