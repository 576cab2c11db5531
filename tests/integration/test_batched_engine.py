"""The real tiny pipeline behind the batcher: a job's images do not depend on its batch mates."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from dal.records import GenerationRequest
from gpu_worker.batching import BatchingGenerator
from gpu_worker.engine import DiffusionEngine
from tests.concurrent_callers import concurrently


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def batches_recorded() -> tuple[float, float]:
    """(pipeline calls, images) the batcher has recorded in this process so far: the
    txt2img_batch_size_images histogram's count and sum."""
    calls = REGISTRY.get_sample_value("txt2img_batch_size_images_count") or 0.0
    images = REGISTRY.get_sample_value("txt2img_batch_size_images_sum") or 0.0
    return calls, images


def req(prompt: str, seed: int, negative: str | None = None) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        width=64,
        height=64,
        num_inference_steps=2,
        guidance_scale=7.5,
        seeds=(seed,),
    )


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> DiffusionEngine:
    engine = DiffusionEngine(tiny_model_dir)
    engine.load()
    return engine


def test_batched_images_match_single_runs(engine: DiffusionEngine, tiny_model_dir: Path) -> None:
    """Three different jobs batched together equal their solo runs up to float noise."""
    requests = [req("a red fox", 1), req("a blue bird", 2, "blurry"), req("a green frog", 3)]
    solo = [engine.generate(r)[0].png for r in requests]
    # An engine of its own: closing the batcher closes its engine.
    batched = DiffusionEngine(tiny_model_dir)
    batched.load()
    batcher = BatchingGenerator(batched, max_batch_images=8, max_wait_s=0.5)
    before = batches_recorded()
    results = [
        images[0].png
        for images in concurrently(batcher, [partial(batcher.generate, r) for r in requests])
    ]
    batcher.close()
    after = batches_recorded()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3)  # they really shared one call
    for i in range(3):
        assert np.abs(pixels(results[i]) - pixels(solo[i])).max() <= 2


def test_generate_batch_returns_images_per_request(engine: DiffusionEngine) -> None:
    """A multi-image request and a single one in one call come back split correctly."""
    two = GenerationRequest("x", None, 64, 64, 2, 1.0, (5, 6))
    one = GenerationRequest("y", None, 64, 64, 2, 1.0, (7,))
    result = engine.generate_batch([two, one])
    assert [[i.seed for i in r] for r in result] == [[5, 6], [7]]
    with pytest.raises(ValueError):
        engine.generate_batch([two, GenerationRequest("z", None, 64, 64, 3, 1.0, (1,))])
