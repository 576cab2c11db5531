"""PNG encoding of the pipeline's images (gpu_worker/images.py): lossless, deterministic, and
compressed."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dal.records import GenerationRequest
from gpu_worker.images import encode_png, from_raw, split_by_request, to_raw


def _smooth(size: int) -> Image.Image:
    """Gradients with a little noise: closer to a generated picture than noise alone."""
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 1.0, size)
    wave = np.outer(np.sin(x * 7), np.cos(x * 5))
    rgb = np.stack([wave, wave.T, wave * wave], axis=-1) * 100 + 128
    rgb += rng.normal(0, 3, rgb.shape)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")


def test_a_png_decodes_to_exactly_the_pixels_it_was_given() -> None:
    image = _smooth(96)
    decoded = Image.open(io.BytesIO(encode_png(image)))
    assert decoded.format == "PNG"
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_equal_pixels_give_equal_bytes() -> None:
    """Deduplicated and replayed jobs serve the same file; nothing time-dependent is written."""
    assert encode_png(_smooth(64)) == encode_png(_smooth(64))


def test_the_png_is_compressed() -> None:
    """Compression is on (a level of 0 stores the rows as they are): a smooth picture takes
    well under its raw size."""
    image = _smooth(128)
    assert len(encode_png(image)) < 0.8 * len(image.tobytes())


def test_a_batch_is_split_back_into_each_requests_images_in_seed_order() -> None:
    first = _request("a", seeds=(1, 2))
    second = _request("b", seeds=(3,))
    images = [Image.new("RGB", (8, 8), (value, 0, 0)) for value in (10, 20, 30)]
    crossed = [from_raw(to_raw(image)) for image in images]  # as from the pipeline process

    split = split_by_request([first, second], crossed)

    assert [[image.seed for image in mine] for mine in split] == [[1, 2], [3]]
    pixels = [[_first_pixel(image.png) for image in mine] for mine in split]
    assert pixels == [[(10, 0, 0), (20, 0, 0)], [(30, 0, 0)]]


def _first_pixel(png: bytes) -> object:
    return Image.open(io.BytesIO(png)).getpixel((0, 0))


def _request(prompt: str, *, seeds: tuple[int, ...]) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=None,
        width=8,
        height=8,
        num_inference_steps=2,
        guidance_scale=7.5,
        seeds=seeds,
    )
