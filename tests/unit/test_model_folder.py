"""What the engine learns from a model folder's file names before loading it: which weight
variant to ask diffusers for, and which unused components the folder leaves out. Folders of
empty files; no torch, no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpu_worker.model_folder import absent_optional_components, load_variant

# Upstream Stable Diffusion 1.5's model_index.json, abridged to what matters here.
SD15_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "requires_safety_checker": True,
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
FP16_DOWNLOAD = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
]
FP32_SAVE = [
    "model_index.json",
    "text_encoder/model.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
]


def folder(root: Path, files: list[str], index: dict[str, object] | None = None) -> Path:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    (root / "model_index.json").write_text(json.dumps(index or SD15_INDEX))
    return root


class TestLoadVariant:
    @pytest.mark.parametrize("half_precision", [True, False])
    def test_a_folder_of_fp16_files_loads_only_as_the_fp16_variant(
        self, tmp_path: Path, half_precision: bool
    ) -> None:
        """Without variant="fp16" diffusers finds no weights in it (on CPU it loads them as
        fp16 and casts them up)."""
        model = folder(tmp_path, FP16_DOWNLOAD)
        assert load_variant(model, half_precision=half_precision) == "fp16"

    @pytest.mark.parametrize("half_precision", [True, False])
    def test_a_plain_folder_loads_without_a_variant(
        self, tmp_path: Path, half_precision: bool
    ) -> None:
        """Asking for a variant the folder lacks is an error in diffusers."""
        model = folder(tmp_path, FP32_SAVE)
        assert load_variant(model, half_precision=half_precision) is None

    def test_with_both_the_gpu_reads_fp16_and_the_cpu_full_precision(self, tmp_path: Path) -> None:
        model = folder(tmp_path, FP32_SAVE + FP16_DOWNLOAD)
        assert load_variant(model, half_precision=True) == "fp16"
        assert load_variant(model, half_precision=False) is None

    def test_a_component_with_only_fp16_weights_needs_the_variant(self, tmp_path: Path) -> None:
        """Mixed folders: diffusers applies the variant only where a component has it."""
        model = folder(
            tmp_path,
            ["unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.bin"],
        )
        assert load_variant(model, half_precision=False) == "fp16"

    def test_sharded_and_other_variants_are_recognised(self, tmp_path: Path) -> None:
        model = folder(
            tmp_path,
            [
                "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
                "unet/diffusion_pytorch_model.non_ema.safetensors",
                "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
            ],
        )
        assert load_variant(model, half_precision=False) == "fp16"

    def test_a_missing_folder_is_left_to_from_pretrained(self, tmp_path: Path) -> None:
        assert load_variant(tmp_path / "nowhere", half_precision=True) is None


class TestAbsentOptionalComponents:
    def test_the_runbook_download_leaves_out_the_safety_checker_and_its_processor(
        self, tmp_path: Path
    ) -> None:
        model = folder(tmp_path, FP16_DOWNLOAD)
        assert absent_optional_components(model) == ["safety_checker", "feature_extractor"]

    def test_components_the_folder_holds_are_loaded(self, tmp_path: Path) -> None:
        model = folder(
            tmp_path,
            [
                *FP16_DOWNLOAD,
                "safety_checker/model.fp16.safetensors",
                "feature_extractor/preprocessor_config.json",
            ],
        )
        assert absent_optional_components(model) == []

    def test_components_the_index_sets_to_none_are_not_absent(self, tmp_path: Path) -> None:
        """The tiny model saves safety_checker as [null, null]: nothing to pass."""
        index = {**SD15_INDEX, "safety_checker": [None, None], "feature_extractor": [None, None]}
        model = folder(tmp_path, FP32_SAVE, index)
        assert absent_optional_components(model) == []

    def test_core_components_are_never_dropped(self, tmp_path: Path) -> None:
        """A missing UNet is diffusers' error to raise, not a component to skip."""
        model = folder(tmp_path, ["vae/diffusion_pytorch_model.safetensors"])
        assert "unet" not in absent_optional_components(model)
