"""PNG encoding of the pipeline's images (gpu_worker/images.py): lossless, deterministic,
compressed, and the stream Pillow's own `save` writes."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from dal.records import GenerationRequest
from gpu_worker.images import (
    PNG_COMPRESS_LEVEL,
    encode_png,
    from_raw,
    split_by_request,
    to_raw,
)


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


def test_a_small_image_is_byte_for_byte_what_pillows_save_writes() -> None:
    """Pins the encoder's arguments to what PngImagePlugin passes: a Pillow upgrade that
    changes them fails here, not in a user's image."""
    image = _smooth(64)
    assert encode_png(image) == _saved_by_pillow(image)


def test_a_large_image_carries_pillows_stream_in_one_idat() -> None:
    """Past 64 KiB, `save` splits the deflate stream over several IDAT chunks; ours is the same
    stream in one. Pillow verifies every chunk's CRC when it reads the file."""
    noise = np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    image = Image.fromarray(noise, "RGB")
    ours, pillows = _chunks(encode_png(image)), _chunks(_saved_by_pillow(image))

    assert [kind for kind, _ in ours] == [b"IHDR", b"IDAT", b"IEND"]
    assert [kind for kind, _ in pillows].count(b"IDAT") > 1
    assert ours[0] == pillows[0]  # the same header
    assert _idat(ours) == _idat(pillows)
    Image.open(io.BytesIO(encode_png(image))).verify()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(image)))), noise)


def test_other_modes_are_written_as_rgb() -> None:
    grey = Image.new("L", (4, 4), 77)
    decoded = Image.open(io.BytesIO(encode_png(grey)))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (77, 77, 77)


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


def _saved_by_pillow(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        chunks.append((png[at + 4 : at + 8], png[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def _idat(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(data for kind, data in chunks if kind == b"IDAT")
