"""Facts about a diffusers model folder read from its JSON configs, without importing torch."""

from __future__ import annotations

import json
from pathlib import Path


def is_model_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def read_default_size(path: Path) -> tuple[int, int] | None:
    """(width, height) the UNet was trained for: sample_size times the VAE's downscale factor."""
    try:
        unet = json.loads((path / "unet" / "config.json").read_text())
        vae = json.loads((path / "vae" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    sample_size = unet.get("sample_size")
    blocks = vae.get("block_out_channels")
    if not isinstance(blocks, list) or not blocks:
        return None
    factor = 2 ** (len(blocks) - 1)
    if isinstance(sample_size, int):
        return sample_size * factor, sample_size * factor
    if isinstance(sample_size, list) and len(sample_size) == 2:
        height, width = (int(v) * factor for v in sample_size)
        return width, height
    return None
