"""DiffusionEngine and the tiny-model builder, on a real tiny random-weight pipeline (CPU)."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dal.errors import GenerationError
from dal.records import GeneratedImage, GenerationRequest
from gpu_worker.engine import DiffusionEngine
from gpu_worker.tiny_model import MARKER_FILE, build_tiny_pipeline

REPO_ROOT = Path(__file__).resolve().parents[2]

# diffusers' Euler scheduler calls np.array on a torch tensor in a way numpy 2 deprecates; it is
# diffusers' to fix and says nothing about the engine.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# Runs the builder's CLI in a fresh interpreter whose sockets refuse to connect or resolve, so a
# build that reached for the network would fail instead of quietly succeeding.
_OFFLINE_BUILD = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network access attempted during an offline build")

socket.socket.connect = refuse
socket.getaddrinfo = refuse
from gpu_worker.tiny_model import main
sys.exit(main(sys.argv[1:]))
"""


def request(
    *seeds: int,
    width: int = 64,
    height: int = 64,
    steps: int = 2,
    guidance: float = 1.0,
    negative_prompt: str | None = None,
) -> GenerationRequest:
    return GenerationRequest(
        prompt="a photo of a cat riding a horse",
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seeds=seeds or (7,),
    )


def pixels(image: GeneratedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> DiffusionEngine:
    engine = DiffusionEngine(tiny_model_dir, device="cpu")
    engine.load()
    return engine


class TestTinyModelBuilder:
    def test_offline_rebuild_is_byte_identical(self, tiny_model_dir: Path, tmp_path: Path) -> None:
        """A build with the network cut off replaces a stale folder with identical files."""
        second = tmp_path / "tiny-sd"
        second.mkdir()
        (second / "half-written.bin").write_bytes(b"left by a crashed build")

        result = subprocess.run(
            [sys.executable, "-c", _OFFLINE_BUILD, "--output", str(second)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == str(second.resolve())
        first_files = sorted(p.relative_to(tiny_model_dir) for p in tiny_model_dir.rglob("*"))
        second_files = sorted(p.relative_to(second) for p in second.rglob("*"))
        assert first_files == second_files
        for relative in first_files:
            if (tiny_model_dir / relative).is_file():
                assert (tiny_model_dir / relative).read_bytes() == (second / relative).read_bytes()
        assert list(tmp_path.iterdir()) == [second]  # no staging folder left behind

    def test_build_is_skipped_when_complete(self, tiny_model_dir: Path) -> None:
        """Building into a complete folder returns it without rewriting anything."""
        marker = tiny_model_dir / MARKER_FILE
        before = marker.stat().st_mtime_ns

        assert build_tiny_pipeline(tiny_model_dir) == tiny_model_dir
        assert marker.stat().st_mtime_ns == before

    def test_reloads_with_local_files_only(self, tiny_model_dir: Path) -> None:
        """The saved folder loads as a StableDiffusionPipeline with no safety checker."""
        from diffusers import DiffusionPipeline, StableDiffusionPipeline

        pipeline = DiffusionPipeline.from_pretrained(tiny_model_dir, local_files_only=True)

        assert isinstance(pipeline, StableDiffusionPipeline)
        assert pipeline.safety_checker is None
        assert pipeline.tokenizer.model_max_length == 77


class TestDiffusionEngine:
    def test_describes_the_model(self, engine: DiffusionEngine, tiny_model_dir: Path) -> None:
        """model_id defaults to the folder name and default_size to the UNet's trained size."""
        assert engine.model_id == tiny_model_dir.name
        assert engine.default_size == (64, 64)
        assert engine.load_seconds > 0

    def test_loads_once_under_concurrency(self, tiny_model_dir: Path) -> None:
        """Concurrent load() calls share one pipeline."""
        fresh = DiffusionEngine(tiny_model_dir, device="cpu")
        loaded: list[object] = []
        threads = [threading.Thread(target=lambda: loaded.append(fresh.load())) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(loaded) == 4
        assert all(pipeline is loaded[0] for pipeline in loaded)

    @pytest.mark.parametrize(("width", "height"), [(64, 64), (64, 96)])
    def test_returns_pngs_of_the_requested_size(
        self, engine: DiffusionEngine, width: int, height: int
    ) -> None:
        """Each image is an RGB PNG of the requested size, tagged with its seed."""
        images = engine.generate(request(3, 4, width=width, height=height))

        assert [image.seed for image in images] == [3, 4]
        for image in images:
            decoded = Image.open(io.BytesIO(image.png))
            assert decoded.format == "PNG"
            assert decoded.mode == "RGB"
            assert decoded.size == (width, height) == (image.width, image.height)

    def test_same_seed_gives_identical_bytes(self, engine: DiffusionEngine) -> None:
        """Repeating a request reproduces the PNG byte for byte."""
        first = engine.generate(request(11))
        second = engine.generate(request(11))

        assert first[0].png == second[0].png

    def test_different_seeds_give_different_images(self, engine: DiffusionEngine) -> None:
        """Two seeds in one request give two different images."""
        images = engine.generate(request(1, 2))

        assert not np.array_equal(pixels(images[0]), pixels(images[1]))

    def test_batched_image_matches_its_single_seed_request(self, engine: DiffusionEngine) -> None:
        """Image i of a batch equals the image generated from seeds[i] alone."""
        batch = engine.generate(request(21, 22))

        for seed, batched in zip((21, 22), batch, strict=True):
            alone = engine.generate(request(seed))[0]
            # Batched and single runs differ by float rounding (~1e-7), not by content.
            assert np.abs(pixels(batched) - pixels(alone)).max() <= 2

    def test_guidance_and_negative_prompt_change_the_image(self, engine: DiffusionEngine) -> None:
        """Classifier-free guidance runs, and the negative prompt steers it."""
        plain = engine.generate(request(5))[0]
        guided = engine.generate(request(5, guidance=7.5))[0]
        negative = engine.generate(request(5, guidance=7.5, negative_prompt="blurry, dark"))[0]

        assert Image.open(io.BytesIO(negative.png)).size == (64, 64)
        assert not np.array_equal(pixels(plain), pixels(guided))
        assert not np.array_equal(pixels(guided), pixels(negative))

    def test_reports_each_step(self, engine: DiffusionEngine) -> None:
        """on_step sees (done, total) after every denoising step."""
        steps: list[tuple[int, int]] = []

        engine.generate(request(steps=3), on_step=lambda done, total: steps.append((done, total)))

        assert steps == [(1, 3), (2, 3), (3, 3)]

    def test_on_step_exception_propagates_unchanged(self, engine: DiffusionEngine) -> None:
        """What on_step raises leaves generate() as is, and the engine keeps working."""

        class StopRequested(ValueError):
            """A ValueError on purpose: the engine must not mistake it for a bad input."""

        def stop(done: int, total: int) -> None:
            raise StopRequested(f"stopped at {done}/{total}")

        with pytest.raises(StopRequested, match="stopped at 1/2"):
            engine.generate(request(), on_step=stop)

        assert len(engine.generate(request())) == 1

    def test_size_not_divisible_by_8_is_not_retryable(self, engine: DiffusionEngine) -> None:
        """A width the pipeline cannot use is reported as invalid, not worth retrying."""
        with pytest.raises(GenerationError) as caught:
            engine.generate(request(width=60))

        assert caught.value.code == "invalid_parameters"
        assert caught.value.retryable is False

    def test_empty_seeds_are_rejected(self, engine: DiffusionEngine) -> None:
        """A request for no images is invalid."""
        empty = GenerationRequest("a cat", None, 64, 64, 2, 1.0, seeds=())

        with pytest.raises(GenerationError) as caught:
            engine.generate(empty)

        assert caught.value.code == "invalid_parameters"
        assert caught.value.retryable is False

    def test_warm_up_generates_at_the_default_size(self, engine: DiffusionEngine) -> None:
        """warm_up() completes one generation and reports how long it took."""
        assert engine.warm_up() > 0


@pytest.fixture(scope="module")
def fp16_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as docs/deploy-cloud-run.md's download leaves a real one: fp16 weight
    files only, model_index.json naming a safety checker whose folder is absent."""
    from bench.model_weights import save_fp16_variant

    return save_fp16_variant(tiny_model_dir, tmp_path_factory.mktemp("models") / "tiny-fp16")


class TestFp16VariantFolder:
    def test_the_gpu_engine_asks_for_the_fp16_files_and_no_safety_checker(
        self, fp16_model_dir: Path
    ) -> None:
        """On CUDA (fp16) the engine reads *.fp16.safetensors; constructing it needs no GPU."""
        options = DiffusionEngine(fp16_model_dir, device="cuda").load_options()

        assert options == {
            "variant": "fp16",
            "safety_checker": None,
            "feature_extractor": None,
            "requires_safety_checker": False,
        }

    def test_a_plain_folder_is_loaded_as_before(self, tiny_model_dir: Path) -> None:
        for device in ("cuda", "cpu"):
            assert DiffusionEngine(tiny_model_dir, device=device).load_options() == {}

    def test_loads_and_generates_on_cpu(self, fp16_model_dir: Path) -> None:
        """No full-precision files and no safety checker: the CPU engine still loads (casting
        the fp16 weights up) and generates."""
        import torch

        engine = DiffusionEngine(fp16_model_dir, device="cpu")
        pipeline = engine.load()

        assert pipeline.safety_checker is None
        assert pipeline.unet.dtype == torch.float32
        (image,) = engine.generate(request(7))
        assert pixels(image).shape == (64, 64, 3)
