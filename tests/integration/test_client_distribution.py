"""The Python SDK installs on its own: its wheel (clients/python, built as a user's pip would
build it) holds txt2img_client alone and requires httpx alone, an environment holding that
wheel and httpx runs it, and importing it loads no part of the service (FastAPI, torch, the
cloud SDKs). The service's own wheel carries the same package, for the `txt2img` CLI."""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import txt2img_client
from tests.image_entry_points import WHEEL_SOURCES
from tests.integration.availability import missing
from tests.integration.test_image_closure import run, uv

ROOT = Path(__file__).resolve().parents[2]
SDK_PROJECT = ROOT / "clients" / "python"
# Top-level packages that must not be loaded by `import txt2img_client`.
SERVICE_PACKAGES = (
    "api", "dal", "gpu_worker", "fastapi", "starlette", "pydantic", "sqlalchemy", "torch",
    "diffusers", "google", "celery", "redis",
)  # fmt: skip
PROBE = f"""
import sys
import httpx
import txt2img_client
from txt2img_client import Client, JobStatus

loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({SERVICE_PACKAGES!r}))
assert loaded == [], loaded

job = {{"id": "j1", "status": "succeeded", "progress": 1.0, "created_at": "2026-11-27T12:00:00Z",
       "updated_at": "2026-11-27T12:00:01Z", "params": {{"prompt": "p", "width": 64, "height": 64,
       "num_inference_steps": 2, "guidance_scale": 7.5, "seed": 1, "num_images": 1}}}}
transport = httpx.MockTransport(lambda request: httpx.Response(202, json=job))
with Client("https://txt2img.test", "key", transport=transport) as client:
    assert client.submit("p").status is JobStatus.SUCCEEDED
print(txt2img_client.__file__)
"""


def build_wheel(project: Path, sources: tuple[str, ...], where: Path) -> Path:
    """The wheel of `project` built from a fresh copy of `sources` (no stale build/ folder),
    by the locked setuptools, without build isolation (nothing is downloaded)."""
    copy = where / "src"
    for name in sources:
        if (project / name).is_dir():
            shutil.copytree(
                project / name, copy / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project / name, copy / name)
    out = where / "wheel"
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
            copy,
        ]
    )
    (wheel,) = out.glob("*.whl")
    return wheel


def locked_pins(lock: Path) -> list[str]:
    """`name==version` of every requirement in a lock file (its hashes left out)."""
    return re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*==[^\s\\;]+)", lock.read_text(), re.M)


@pytest.fixture(scope="module")
def sdk_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sources = ("pyproject.toml", "README.md", "txt2img_client")
    return build_wheel(SDK_PROJECT, sources, tmp_path_factory.mktemp("sdk"))


class TestSdkDistribution:
    def test_the_wheel_holds_the_package_alone(self, sdk_wheel: Path) -> None:
        with zipfile.ZipFile(sdk_wheel) as wheel:
            names = wheel.namelist()
        dist_info = f"txt2img_client-{txt2img_client.__version__}.dist-info/"
        assert {name.split("/")[0] + "/" for name in names} == {"txt2img_client/", dist_info}
        modules = {p.name for p in (SDK_PROJECT / "txt2img_client").glob("*.py")}
        assert {n.removeprefix("txt2img_client/") for n in names if n.endswith(".py")} == modules
        assert "txt2img_client/py.typed" in names

    def test_it_requires_httpx_alone(self, sdk_wheel: Path) -> None:
        with zipfile.ZipFile(sdk_wheel) as wheel:
            dist_info = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = email.parser.Parser().parsestr(wheel.read(dist_info).decode())
        assert metadata["Name"] == "txt2img-client"
        assert metadata["Version"] == txt2img_client.__version__
        requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
        assert [(r.name, str(r.specifier)) for r in requirements] == [("httpx", "<1,>=0.27")]

    def test_an_environment_of_the_wheel_and_httpx_runs_it(
        self, sdk_wheel: Path, tmp_path: Path
    ) -> None:
        """What `pip install txt2img-client` gives: httpx's closure and the SDK, nothing else.
        Resolved from the package index as a user's install is, held to the versions of the
        dev lock (a constraint), so the run does not depend on what is newest today."""
        env = tmp_path / "env"
        run([uv(), "venv", "--quiet", "--python", sys.executable, env])
        python = env / "bin" / "python"
        pins = tmp_path / "pins.txt"
        pins.write_text("\n".join(locked_pins(ROOT / "tools" / "locks" / "dev.txt")) + "\n")
        installed = subprocess.run(
            [uv(), "pip", "install", "--quiet", "--python", python, "-c", pins, sdk_wheel],
            capture_output=True,
            text=True,
            check=False,
        )
        if installed.returncode != 0 and "Failed to fetch" in installed.stderr:
            missing("the package index", installed.stderr)
        assert installed.returncode == 0, installed.stderr
        listed = run([uv(), "pip", "list", "--python", python, "--format", "freeze"]).stdout
        names = {line.split("==")[0].lower() for line in listed.splitlines()}
        assert "txt2img-client" in names and "httpx" in names
        assert not names & {"fastapi", "pydantic", "torch", "google-cloud-storage", "sqlalchemy"}
        probed = run([python, "-I", "-c", PROBE], cwd=tmp_path)
        assert str(env) in probed.stdout  # the installed copy, not the checkout's

    def test_importing_it_in_the_dev_environment_loads_none_of_the_service(
        self, tmp_path: Path
    ) -> None:
        """Here everything is installed; the SDK itself must still pull none of it in."""
        probed = run([sys.executable, "-I", "-c", PROBE], cwd=tmp_path)
        assert "clients/python/txt2img_client" in probed.stdout


class TestServiceWheel:
    def test_carries_the_sdk_for_the_cli(self, tmp_path: Path) -> None:
        """Built from what the Dockerfiles copy: txt2img_client sits at the top of the wheel,
        beside api (whose cli imports it)."""
        wheel = build_wheel(ROOT, WHEEL_SOURCES, tmp_path)
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
        assert {"txt2img_client/_sync.py", "txt2img_client/py.typed", "api/cli.py"} <= names
        assert not any(name.startswith("clients/") for name in names)
