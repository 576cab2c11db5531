"""Each image's dependency set covers what its entry points run: an environment built from the
image's lock alone (as its Dockerfile installs it, with no dev extra) imports every entry
point's module, and the API starts on the embedded profile's stores and answers /healthz.

This is the check the images' own build steps make, run here where no Docker engine is: a
dependency that only the dev environment has (httpx once was) fails it. The environments are
made by uv from its cache, so after `make setup` nothing is downloaded, torch least of all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from emulators.process import free_port, stop_pid, wait_until
from tests.image_entry_points import ENTRY_POINT_MODULES, WHEEL_SOURCES
from tests.integration import redis_service
from tests.integration.availability import missing
from tools.locks import LOCKS, torch_find_links

ROOT = Path(__file__).resolve().parents[2]
# What each Dockerfile installs (api/Dockerfile, gpu_worker/Dockerfile); the worker image's
# torch is the CUDA build of the same version, torch-cpu.txt stands in for it here.
IMAGE_LOCKS: dict[str, tuple[str, ...]] = {
    "api": ("api.txt",),
    "worker": ("worker.txt", "torch-cpu.txt"),
}
PIPELINE_PACKAGES = ("torch", "diffusers", "transformers", "accelerate")

redis_url = redis_service.redis_url


def uv() -> Path:
    path = Path(sys.executable).with_name("uv")
    if not path.exists():
        missing("uv", "run `make setup`: it installs uv from tools/locks/installers.txt")
    return path


def run(
    command: Sequence[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `command`; a failure shows its output."""
    args = [str(part) for part in command]
    result = subprocess.run(args, capture_output=True, text=True, check=False, cwd=cwd, env=env)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built as the images build it: from a fresh copy of what the
    Dockerfiles copy (no stale build/ folder can slip old modules in), by the locked
    setuptools, without build isolation (the dev environment holds build.txt's setuptools)."""
    source = tmp_path_factory.mktemp("src")
    for name in WHEEL_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    run(
        [
            uv(),
            "build",
            "--wheel",
            "--no-build-isolation",
            "--python",
            sys.executable,
            "--out-dir",
            out,
            source,
        ]
    )
    (wheel,) = out.glob("*.whl")
    return wheel


def image_environment(image: str, where: Path, wheel: Path) -> Path:
    """A fresh virtualenv holding exactly the image's locks, then the project with --no-deps,
    as the Dockerfile does. Returns its python."""
    env = where / f"{image}-env"
    run([uv(), "venv", "--quiet", "--python", sys.executable, env])
    python = env / "bin" / "python"
    locks = [LOCKS / name for name in IMAGE_LOCKS[image]]
    run(
        [
            uv(),
            "pip",
            "sync",
            "--quiet",
            "--python",
            python,
            "--require-hashes",
            "--find-links",
            torch_find_links(),
            *locks,
        ]
    )
    run([uv(), "pip", "install", "--quiet", "--python", python, "--no-deps", wheel])
    return python


def import_in(python: Path, modules: Sequence[str], cwd: Path) -> None:
    """Import `modules` in a fresh, isolated interpreter (-I: no source tree, no PYTHONPATH on
    the path), and check that the project came from the environment, not from the checkout."""
    probe = (
        "import importlib, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert sys.prefix in module.__file__, (name, module.__file__)\n"
    )
    run([python, "-I", "-c", probe], cwd=cwd, env=_clean_env())


def _clean_env() -> dict[str, str]:
    """The environment without what points a Python at the checkout or the dev venv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in drop} | {
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture
def api_server(
    tmp_path: Path, project_wheel: Path, redis_url: str
) -> Iterator[tuple[Path, str, subprocess.Popen[str]]]:
    """The API from the API image's environment on the embedded profile (SQLite, files), its
    jobs handed to Celery on Redis: the inline queue would run the pipeline in the API's own
    process, which the API image cannot (it holds no torch)."""
    python = image_environment("api", tmp_path, project_wheel)
    port = free_port()
    env = _clean_env() | {
        "APP_ENV": "local",
        "JOB_QUEUE": "celery",
        "CELERY_BROKER_URL": redis_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATA_DIR": str(tmp_path / "data"),
    }
    server = subprocess.Popen(
        [str(python), "-I", "-m", "api"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield python, f"http://127.0.0.1:{port}", server
    finally:
        stop_pid(server.pid)


class TestApiImage:
    def test_imports_every_entry_point_without_the_pipeline(
        self, tmp_path: Path, project_wheel: Path
    ) -> None:
        """api.txt alone runs the app, both command lines and the outbox sweep job, and holds
        no torch, diffusers or transformers."""
        python = image_environment("api", tmp_path, project_wheel)
        import_in(python, ENTRY_POINT_MODULES["api"], tmp_path)
        found = run(
            [
                python,
                "-I",
                "-c",
                "import importlib.util as u; "
                f"print([n for n in {list(PIPELINE_PACKAGES)!r} if u.find_spec(n)])",
            ],
            cwd=tmp_path,
        )
        assert found.stdout.strip() == "[]"

    def test_command_lines_start(self, tmp_path: Path, project_wheel: Path) -> None:
        """The console scripts the image installs run as far as their help."""
        python = image_environment("api", tmp_path, project_wheel)
        for script in ("txt2img", "txt2img-admin"):
            shown = run([python.with_name(script), "--help"], cwd=tmp_path, env=_clean_env())
            assert "usage:" in shown.stdout

    def test_serves_healthz_on_the_embedded_profile(
        self, api_server: tuple[Path, str, subprocess.Popen[str]]
    ) -> None:
        _, url, server = api_server

        def answers_healthz() -> bool:
            if server.poll() is not None:
                output = server.stdout.read() if server.stdout else ""
                pytest.fail(f"the API exited with {server.returncode}:\n{output}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_until(answers_healthz, timeout=60, what="the API image's /healthz")

    def test_the_inline_queue_is_refused_with_what_to_do(
        self, tmp_path: Path, project_wheel: Path
    ) -> None:
        """The embedded profile's inline queue runs the pipeline in the API process, which
        the API image cannot: the API exits at start naming the queues it can use."""
        python = image_environment("api", tmp_path, project_wheel)
        env = _clean_env() | {
            "APP_ENV": "local",
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "DATA_DIR": str(tmp_path / "data"),
        }
        started = subprocess.run(
            [str(python), "-I", "-m", "api"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert started.returncode != 0
        output = started.stdout + started.stderr
        assert "PipelineNotInstalled" in output and "JOB_QUEUE=celery" in output
        assert "ModuleNotFoundError" not in output


class TestWorkerImage:
    def test_imports_every_entry_point_and_builds_a_pipeline(
        self, tmp_path: Path, project_wheel: Path
    ) -> None:
        """worker.txt and torch run the push, pull and Celery workers and the pipeline's child
        process, and diffusers builds and saves a (tiny) pipeline with them."""
        python = image_environment("worker", tmp_path, project_wheel)
        import_in(python, ENTRY_POINT_MODULES["worker"], tmp_path)
        model = tmp_path / "tiny-sd"
        run(
            [python.with_name("txt2img-build-tiny-model"), "--output", model],
            cwd=tmp_path,
            env=_clean_env(),
        )
        assert (model / "model_index.json").is_file()
