"""What the weights' form costs: bytes on disk of a model saved in fp32 and as the fp16 variant,
and the worker's start-to-ready (`python -m gpu_worker` until /readyz answers 200) from each
folder on local disk. Prints one JSON document (docs/performance.md, "Model weights").

    python -m bench.model_weights                 # the tiny model (built if missing)
    python -m bench.model_weights --model DIR     # any diffusers folder saved in fp32
    python -m bench.model_weights --runs 5

The fp16 folder is what docs/deploy-cloud-run.md's download gives: the fp16 weight files, the
configs and the tokenizer, no safety checker (model_index.json still names it, as upstream's
does). `sd15_by_parameter_count` adds the full-size Stable Diffusion 1.5 figures from
bench/sd15's configs: parameters counted on empty (meta) tensors, times 4 or 2 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.worker_start import worker_start_to_ready_s
from emulators.process import free_port
from emulators.stack import ensure_tiny_model
from gpu_worker.tiny_model import default_tiny_model_dir

SD15_CONFIGS = Path(__file__).parent / "sd15"
# How upstream Stable Diffusion 1.x's model_index.json names the components the engine does
# without (gpu_worker.model_folder.OPTIONAL_COMPONENTS).
SD15_SAFETY_ENTRIES: dict[str, Any] = {
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "requires_safety_checker": True,
}


SAFETY_CHECKER_VISION = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "image_size": 224,
}


def log(message: str) -> None:
    print(f"[bench.model_weights] {message}", file=sys.stderr, flush=True)  # noqa: T201


def save_fp16_variant(source: Path, output: Path) -> Path:
    """Save the pipeline in `source` as the fp16 variant only (`*.fp16.safetensors`), its
    model_index.json naming a safety checker the folder does not hold: the layout of the
    deploy runbook's download."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import diffusers
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for module in (diffusers_logging, transformers_logging):
        module.disable_progress_bar()
    pipeline = diffusers.DiffusionPipeline.from_pretrained(source, local_files_only=True)
    for name, component in pipeline.components.items():
        if isinstance(component, torch.nn.Module):
            setattr(pipeline, name, component.to(torch.float16))
    pipeline.save_pretrained(output, safe_serialization=True, variant="fp16")
    index_path = output / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update(SD15_SAFETY_ENTRIES)
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return output


def folder_bytes(folder: Path) -> dict[str, int]:
    """Apparent bytes (file sizes) of everything and of the weight files alone, and the disk
    space the files take (allocated blocks)."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin")]
    return {
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "weight_bytes": sum(p.stat().st_size for p in weights),
        "disk_bytes": sum(p.stat().st_blocks * 512 for p in files),
    }


def start_to_ready(model: Path, work: Path) -> float:
    """Seconds from starting `python -m gpu_worker` on `model` to /readyz answering 200."""
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "test",
        "JOB_QUEUE": "pubsub",
        "WORKER_PORT": str(port),
        "MODEL_PATH": str(model),
        "DATA_DIR": str(work),
        "LOG_LEVEL": "warning",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
    }
    return worker_start_to_ready_s(env)


def sd15_by_parameter_count() -> dict[str, Any]:
    """Bytes of the full-size SD 1.5 UNet, VAE, text encoder and safety checker in fp32 and
    fp16, from their parameter counts (empty tensors: nothing allocated, nothing downloaded).
    `engine_fp16_bytes` is what the runbook's download fetches; `fp32_with_safety_checker_bytes`
    what its previous recipe fetched."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPConfig, CLIPTextConfig, CLIPTextModel

    def config(name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((SD15_CONFIGS / f"{name}_config.json").read_text())
        return {k: v for k, v in data.items() if not k.startswith("_") and k != "architectures"}

    with init_empty_weights():
        components = {
            "unet": UNet2DConditionModel(**config("unet")),
            "vae": AutoencoderKL(**config("vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
            # SD 1.5's safety checker: a CLIP ViT-L/14 vision tower projected to 768.
            "safety_checker": StableDiffusionSafetyChecker(
                CLIPConfig(vision_config=SAFETY_CHECKER_VISION, projection_dim=768)
            ),
        }
    figures: dict[str, Any] = {}
    for name, module in components.items():
        count = sum(p.numel() for p in module.parameters())
        figures[name] = {"parameters": count, "fp32_bytes": 4 * count, "fp16_bytes": 2 * count}
    engine = ("unet", "vae", "text_encoder")
    figures["engine_fp16_bytes"] = sum(figures[name]["fp16_bytes"] for name in engine)
    figures["fp32_with_safety_checker_bytes"] = sum(
        figures[name]["fp32_bytes"] for name in (*engine, "safety_checker")
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_weights", description=__doc__)
    parser.add_argument("--model", type=Path, help="a diffusers folder in fp32 (default: tiny)")
    parser.add_argument("--runs", type=int, default=3, help="worker starts per folder")
    parser.add_argument("--skip-sd15", action="store_true", help="no full-size parameter count")
    args = parser.parse_args(argv)
    fp32 = (args.model or ensure_tiny_model(default_tiny_model_dir())).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-weights-") as tmp:
        work = Path(tmp)
        log(f"saving the fp16 variant of {fp32}")
        fp16 = save_fp16_variant(fp32, work / "fp16")
        result: dict[str, Any] = {
            "model": str(fp32),
            "fp32": folder_bytes(fp32),
            "fp16_variant": folder_bytes(fp16),
        }
        result["fp16_weight_bytes_ratio"] = round(
            result["fp16_variant"]["weight_bytes"] / result["fp32"]["weight_bytes"], 3
        )
        for label, folder in (("fp32", fp32), ("fp16_variant", fp16)):
            runs = []
            for run in range(args.runs):
                log(f"worker start-to-ready from the {label} folder ({run + 1}/{args.runs})")
                runs.append(round(start_to_ready(folder, work / f"data-{label}-{run}"), 3))
            result[label]["start_to_ready_s"] = runs
            result[label]["start_to_ready_median_s"] = statistics.median(runs)
    if not args.skip_sd15:
        log("full-size SD 1.5 by parameter count")
        result["sd15_by_parameter_count"] = sd15_by_parameter_count()
    print(json.dumps(result, indent=2))  # noqa: T201 - the output is the point
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
