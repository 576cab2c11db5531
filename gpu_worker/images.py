"""From a pipeline call's images to each request's PNGs. Torch-free, so the serving process
can encode what the pipeline process hands it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from dal.records import GeneratedImage, GenerationRequest


def encode_png(image: Any) -> bytes:
    # PIL writes no timestamp or other varying chunk unless asked, so equal pixels give equal
    # bytes; the pipeline's images carry no `info` to copy either.
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
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
