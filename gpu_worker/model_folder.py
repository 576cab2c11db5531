"""Facts about a diffusers model folder read from its JSON configs and file names, without
importing torch."""

from __future__ import annotations

import json
import re
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


def read_scheduler_class(path: Path) -> str | None:
    """The diffusers scheduler class the folder's pipeline loads (`EulerDiscreteScheduler`),
    or None when the folder cannot be read."""
    try:
        config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("_class_name") if isinstance(config, dict) else None
    return name if isinstance(name, str) and name else None


# A weight file as diffusers and transformers name it: `<prefix>[.<variant>][-00001-of-00002]
# .<format>`, e.g. diffusion_pytorch_model.fp16.safetensors or model-00001-of-00002.safetensors.
_WEIGHT_FILE = re.compile(
    r"^(?:diffusion_pytorch_model|pytorch_model|model)"
    r"(?:\.(?P<variant>[A-Za-z0-9_]+))?"
    r"(?:-\d{5}-of-\d{5})?"
    r"\.(?:safetensors|bin)$"
)
HALF_PRECISION_VARIANT = "fp16"
# Components the engine never uses: StableDiffusionPipeline's NSFW filter and the image
# processor that feeds it, and the IP-Adapter image encoder. A folder may leave them out even
# when model_index.json names them (the deploy runbook's download does).
OPTIONAL_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder")


def _component_weights(path: Path) -> dict[str, set[str | None]]:
    """Each component folder's weight-file variants (None: plain, full-precision files)."""
    found: dict[str, set[str | None]] = {}
    if not path.is_dir():
        return found  # from_pretrained says what is wrong with the path
    for component in sorted(p for p in path.iterdir() if p.is_dir()):
        variants = {
            match["variant"]
            for file in component.iterdir()
            if (match := _WEIGHT_FILE.match(file.name)) is not None
        }
        if variants:
            found[component.name] = variants
    return found


def load_variant(path: Path, *, half_precision: bool) -> str | None:
    """The `variant` to pass to `from_pretrained` for the folder at `path`.

    "fp16" when the folder holds fp16 weight files (`*.fp16.safetensors`) and either the
    engine runs in half precision (they are half the bytes to read, and nothing is cast) or
    some component has no other weights (diffusers then finds nothing to load without it).
    None otherwise: the plain files, which are all a folder without fp16 files can offer.
    """
    weights = _component_weights(path)
    with_fp16 = [name for name, kinds in weights.items() if HALF_PRECISION_VARIANT in kinds]
    if not with_fp16:
        return None
    if half_precision or any(None not in weights[name] for name in with_fp16):
        return HALF_PRECISION_VARIANT
    return None


def absent_optional_components(path: Path) -> list[str]:
    """The OPTIONAL_COMPONENTS that model_index.json names but the folder does not hold:
    loading must pass None for them, or diffusers looks for their folder and fails."""
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError):
        return []
    return [
        name
        for name in OPTIONAL_COMPONENTS
        if isinstance(index.get(name), list)
        and any(part is not None for part in index[name])
        and not (path / name).is_dir()
    ]
