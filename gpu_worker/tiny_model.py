"""Build a tiny, randomly initialised Stable Diffusion pipeline, fully offline.

No model hub is reachable from the build machines, yet development and tests should go
through the real diffusers loading path (`from_pretrained` on a folder). So we assemble a
`StableDiffusionPipeline` from the same classes a real checkpoint uses, at the tiny shapes
diffusers' own unit tests use, and save it with `save_pretrained` (~350 KB). Every component is
built after its own `torch.manual_seed`, so rebuilding gives byte-identical weight files.

Run `python -m gpu_worker.tiny_model [--output DIR] [--force]`; the last line printed is the
folder to point `MODEL_PATH` at.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Bump whenever the shapes, seeds or vocabulary change: a folder built by another version is
# rebuilt instead of silently reused.
BUILDER_VERSION = 1
# Written last into the temporary folder, so its presence (after the atomic rename) means the
# whole pipeline is there.
MARKER_FILE = "tiny_model_build.json"

_SEED = 0
_MAX_TOKENS = 77
_HIDDEN = 32
# A small English prompt vocabulary: its words become single tokens, anything else falls back
# to byte-level tokens, so every prompt tokenizes.
_WORDS = [
    "a",
    "an",
    "and",
    "at",
    "in",
    "of",
    "on",
    "the",
    "with",
    "photo",
    "painting",
    "portrait",
    "drawing",
    "style",
    "cat",
    "dog",
    "horse",
    "astronaut",
    "riding",
    "moon",
    "mountain",
    "landscape",
    "city",
    "street",
    "night",
    "red",
    "blue",
    "green",
    "sky",
    "sun",
]


def default_tiny_model_dir() -> Path:
    """`$TINY_MODEL_DIR`, else `.data/models/tiny-sd`, resolved against the working directory."""
    return Path(os.environ.get("TINY_MODEL_DIR", ".data/models/tiny-sd")).resolve()


def is_complete(folder: Path) -> bool:
    """True when `folder` holds a pipeline written by this builder version."""
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("builder_version") == BUILDER_VERSION
        and (folder / "model_index.json").is_file()
    )


def build_tiny_pipeline(output_dir: Path, *, force: bool = False) -> Path:
    """Build the tiny pipeline into `output_dir` (unless already there) and return the folder.

    The pipeline is written to a temporary sibling and renamed into place, so a crash never
    leaves a half-written folder that a later call (or a worker) would mistake for a model.
    """
    output_dir = output_dir.resolve()
    if not force and is_complete(output_dir):
        return output_dir
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        _save_pipeline(staging)
        _write_marker(staging)
        _normalise_permissions(staging)
        _move_into_place(staging, output_dir, force=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _move_into_place(staging: Path, output_dir: Path, *, force: bool) -> None:
    if output_dir.exists():
        if not force and is_complete(output_dir):
            return  # another process finished the same build first: keep theirs
        # A directory cannot be renamed over a non-empty one: move the stale one aside first.
        stale = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
        stale.rmdir()
        output_dir.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.rename(output_dir)
    except OSError:
        if not is_complete(output_dir):  # lost a race to a concurrent build: theirs is fine
            raise


def _write_marker(folder: Path) -> None:
    marker = {"builder_version": BUILDER_VERSION, "seed": _SEED}
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _save_pipeline(folder: Path) -> None:
    # Set before diffusers/transformers are imported: silences their import-time warnings
    # (torchvision) and guarantees nothing tries the hub.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel
    from transformers.utils import logging as transformers_logging

    tokenizer = _build_tokenizer()
    vocab_size = len(tokenizer)

    torch.manual_seed(_SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,  # latent side; x2 for the 2-level VAE below = 64x64 pixels
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=_HIDDEN,
        norm_num_groups=2,
    )
    torch.manual_seed(_SEED)
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
    )
    torch.manual_seed(_SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=_HIDDEN,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=_MAX_TOKENS,
            layer_norm_eps=1e-5,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # Stable Diffusion 1.x's scheduler settings.
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        # Both are required arguments; None plus requires_safety_checker=False loads silently.
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # transformers draws a "Writing model shards" bar while saving; keep the build quiet
    # without changing the process-wide setting for whoever called us.
    bars_were_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        pipeline.save_pretrained(folder, safe_serialization=True)
    finally:
        if bars_were_enabled:
            transformers_logging.enable_progress_bar()


def _normalise_permissions(folder: Path) -> None:
    # mkdtemp makes the staging folder 0700 and the weight writers leave some files 0600; a
    # model baked into an image must be readable by the (non-root) worker user.
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _build_tokenizer() -> Any:
    """A CLIP byte-level BPE tokenizer from a hand-written vocab.json + merges.txt."""
    from transformers import CLIPTokenizer

    vocab, merges = _vocab_and_merges()
    with tempfile.TemporaryDirectory(prefix="tiny-clip-tokenizer-") as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text(
            "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
        )
        # Without model_max_length the tokenizer reports ~1e30 and max_length padding breaks.
        # (Files rather than CLIPTokenizer(vocab=..., merges=...): the file route works on both
        # the slow transformers 4 tokenizer and the tokenizers-backed one of transformers 5.)
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=_MAX_TOKENS)  # nosec B615 # a local folder written above, no hub
    # transformers 5 keeps these load-time flags and would write them into the saved
    # tokenizer_config.json, where they describe this build, not the model.
    for load_flag in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(load_flag, None)
    return tokenizer


def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    symbols = list(_bytes_to_unicode().values())
    tokens: list[str] = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in _WORDS:
        # Merge left to right; the last merge produces the end-of-word token `word</w>`.
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            left, right = pieces[0], pieces[1]
            merge = f"{left} {right}"
            if merge not in merges:
                merges.append(merge)
            result = left + right
            # The BPE model rejects a merge whose result is missing, in either form.
            bare = result.removesuffix("</w>")
            tokens.extend([bare, bare + "</w>"])
            pieces = [result, *pieces[2:]]
    tokens.extend(["<|startoftext|>", "<|endoftext|>"])
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_worker.tiny_model",
        description="Build the tiny random-weight Stable Diffusion pipeline offline.",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        default=None,
        help="folder to write (default: $TINY_MODEL_DIR or .data/models/tiny-sd)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if already built")
    args = parser.parse_args(argv)
    output: Path = args.output if args.output is not None else default_tiny_model_dir()
    started = time.perf_counter()
    already = not args.force and is_complete(output.resolve())
    folder = build_tiny_pipeline(output, force=args.force)
    what = "already built" if already else f"built in {time.perf_counter() - started:.1f}s"
    sys.stderr.write(f"tiny model {what}\n")
    sys.stdout.write(f"{folder}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
