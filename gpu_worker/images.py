"""From a pipeline call's images to each request's PNGs. Torch-free, so the serving process
can encode what the pipeline process hands it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from dal.records import GeneratedImage, GenerationRequest

# zlib's level 4, not Pillow's default 6. On four 512x512 photographs (Pillow 13, whose wheels
# bundle zlib-ng), level 6 cost 108 ms of CPU per image for 423 KiB, level 4 50 ms for 425 KiB,
# level 1 26 ms for 460 KiB: past 4, a few hundred bytes cost twice the CPU (docs/performance.md,
# "A ninth round"). PNG is lossless at every level: the pixels are the same. ComfyUI's SaveImage
# node saves at 4 too.
PNG_COMPRESS_LEVEL = 4


def encode_png(image: Any) -> bytes:
    # PIL writes no timestamp or other varying chunk unless asked, so equal pixels give equal
    # bytes; the pipeline's images carry no `info` to copy either.
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


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
