"""GPU benchmark: a full-size Stable Diffusion 1.5 architecture with random weights (configs in
bench/sd15/, nothing downloaded), on CUDA in fp16 at 512x512.

Measures seconds per image at 50 and at 4 steps, images/s at batch 1, 4 and 8 (at
--throughput-steps), each with and without torch.compile, and peak GPU memory; writes JSON.
Designed to finish in under 8 minutes on one H100; `--budget-s` stops early (and says so).

    python -m bench.gpu --out gpu-results.json
    python -m bench.gpu --device cpu --smoke      # checks the script itself, anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).parent / "sd15"


def build_pipeline(device: str, dtype: Any, *, smoke: bool) -> Any:
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from gpu_worker.tiny_model import _build_tokenizer

    def config(name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((CONFIGS / f"{name}_config.json").read_text())
        data.pop("_class_name", None)
        data.pop("architectures", None)
        return data

    unet_cfg, vae_cfg, text_cfg = config("unet"), config("vae"), config("text_encoder")
    if smoke:  # same classes, toy widths: proves the script runs without a GPU
        unet_cfg.update(
            block_out_channels=[32, 64, 64, 64],
            cross_attention_dim=32,
            attention_head_dim=2,
            sample_size=8,
        )
        vae_cfg.update(block_out_channels=[32, 32, 32, 32], sample_size=64)
        text_cfg.update(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            projection_dim=32,
        )
    from diffusers.utils import logging as diffusers_logging

    # Casting freshly initialised random weights is exactly what we want; skip the warning.
    diffusers_logging.set_verbosity_error()
    torch.manual_seed(0)
    # Random weights, built directly on the device in the target precision.
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg).to(dtype)
        vae = AutoencoderKL(**vae_cfg).to(dtype)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg)).to(dtype)
    scheduler = EulerDiscreteScheduler(**config("scheduler"))
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_build_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to(device)
    pipeline.set_progress_bar_config(disable=True)
    if device.startswith("cuda"):
        from diffusers.models.attention_processor import AttnProcessor2_0

        pipeline.unet.set_attn_processor(AttnProcessor2_0())
        pipeline.unet.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
    return pipeline


def timed(pipeline: Any, *, batch: int, steps: int, size: int, device: str) -> float:
    import torch

    generators = [torch.Generator(device=device).manual_seed(i) for i in range(batch)]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        pipeline(
            prompt=["a photo of an astronaut riding a horse"] * batch,
            width=size,
            height=size,
            num_inference_steps=steps,
            guidance_scale=7.5,
            generator=generators,
            output_type="pil",
        )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def measure(pipeline: Any, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    size, device = args.size, args.device
    out: dict[str, Any] = {}
    timed(pipeline, batch=1, steps=2, size=size, device=device)  # warm / compile batch 1
    for steps in (50, 4):
        if time.perf_counter() > deadline:
            out["stopped_early"] = True
            return out
        out[f"seconds_per_image_{steps}_steps"] = round(
            timed(pipeline, batch=1, steps=steps, size=size, device=device), 4
        )
    for batch in (1, 4, 8):
        if time.perf_counter() > deadline:
            out["stopped_early"] = True
            return out
        timed(pipeline, batch=batch, steps=2, size=size, device=device)  # warm this shape
        seconds = timed(
            pipeline, batch=batch, steps=args.throughput_steps, size=size, device=device
        )
        out[f"images_per_s_batch_{batch}"] = round(batch / seconds, 3)
    return out


def main() -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--throughput-steps", type=int, default=25)
    parser.add_argument("--budget-s", type=float, default=450)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="toy widths, for CPU checks")
    parser.add_argument("--out", type=Path, default=Path("gpu-results.json"))
    args = parser.parse_args()
    if args.smoke:
        args.size, args.throughput_steps = 64, 2

    import torch

    started = time.perf_counter()
    deadline = started + args.budget_s
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype),
        "size": args.size,
        "throughput_steps": args.throughput_steps,
        "architecture": "SD-1.5 (random weights)" if not args.smoke else "toy (smoke test)",
    }
    build_started = time.perf_counter()
    pipeline = build_pipeline(args.device, dtype, smoke=args.smoke)
    report["build_s"] = round(time.perf_counter() - build_started, 2)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    report["eager"] = measure(pipeline, args, deadline)
    if args.device.startswith("cuda"):
        report["eager"]["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if not args.no_compile and time.perf_counter() < deadline:
        compile_started = time.perf_counter()
        pipeline.unet = torch.compile(pipeline.unet, mode="max-autotune-no-cudagraphs")
        report["compiled"] = measure(pipeline, args, deadline)
        report["compiled"]["compile_and_measure_s"] = round(
            time.perf_counter() - compile_started, 1
        )
        if args.device.startswith("cuda"):
            report["compiled"]["peak_memory_gib"] = round(
                torch.cuda.max_memory_allocated() / 2**30, 2
            )
    report["total_s"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))  # noqa: T201 - the output is the point
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
