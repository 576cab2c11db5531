"""From a pipeline call's images to each request's PNGs. Torch-free, so the serving process
can encode what the pipeline process hands it."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

from dal.records import GeneratedImage, GenerationRequest

# zlib's level 4, not Pillow's default 6. On four 512x512 photographs (Pillow 13, whose wheels
# bundle zlib-ng), level 6 cost 108 ms of CPU per image for 423 KiB, level 4 50 ms for 425 KiB,
# level 1 26 ms for 460 KiB: past 4, a few hundred bytes cost twice the CPU (docs/performance.md,
# "A ninth round"). PNG is lossless at every level: the pixels are the same. ComfyUI's SaveImage
# node saves at 4 too.
PNG_COMPRESS_LEVEL = 4


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR after the size: 8 bits per sample, colour type 2 (RGB), deflate, adaptive filtering, no
# interlace (PNG specification, 11.2.2).
_RGB8 = struct.pack(">BBBBB", 8, 2, 0, 0, 0)


def encode_png(image: Any) -> bytes:
    """The image as an RGB PNG: a signature, IHDR, one IDAT, IEND, and nothing that varies
    (no time, no text), so equal pixels give equal bytes.

    The pixel data is Pillow's own PNG encoder (`zip`: the per-row filter choice and deflate
    that `Image.save` runs). Only the three chunks around it are written here: `save` wraps the
    same stream in a page of Python per call, which a serving process runs cold for each image
    (0.28 ms of a 64x64 image's 1.04 ms, docs/performance.md, "A ninth round"). For the
    pipeline's images the IDAT stream is Pillow's byte for byte; `save` only splits it over
    more IDAT chunks (tests/unit/test_images.py)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    # The zip encoder's arguments, as PngImagePlugin passes them: raw mode, optimize,
    # compress level, compress type (-1: zlib's default strategy), preset dictionary.
    pixels = rgb.tobytes("zip", ("RGB", False, PNG_COMPRESS_LEVEL, -1, b""))
    width, height = rgb.size
    return b"".join(
        (
            _PNG_SIGNATURE,
            *_chunk(b"IHDR", struct.pack(">II", width, height) + _RGB8),
            *_chunk(b"IDAT", pixels),
            *_chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """Length, type, data, and the CRC-32 of type and data (PNG specification, 5.3), as parts
    for one join: a large image's IDAT is copied once, not once per concatenation."""
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)), kind, data, struct.pack(">I", crc)


def split_by_request(
    requests: Sequence[GenerationRequest], images: Sequence[Any]
) -> list[list[GeneratedImage]]:
    """A batch call's images (one per seed, in request order) as each request's PNGs, in
    its seed order."""
    results: list[list[GeneratedImage]] = []
    position = 0
    for request in requests:
        mine = images[position : position + len(request.seeds)]
        position += len(request.seeds)
        results.append(
            [
                GeneratedImage(
                    png=encode_png(image), width=image.width, height=image.height, seed=seed
                )
                for image, seed in zip(mine, request.seeds, strict=True)
            ]
        )
    return results


def to_raw(image: Any) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes): how an image crosses a process boundary cheaply."""
    rgb = image.convert("RGB")
    return rgb.width, rgb.height, rgb.tobytes()


def from_raw(raw: tuple[int, int, bytes]) -> Any:
    from PIL import Image

    width, height, data = raw
    return Image.frombytes("RGB", (width, height), data)
