"""The dependency locks in tools/locks/: write them (`make lock`, `make upgrade`) and check that
they still say what pyproject.toml asks for (`make lint`).

Every lock is a requirements file with exact versions and sha256 hashes, resolved by uv for
CPython 3.11 on x86_64 Linux (the platform of both images and of CI) from PyPI:

    dev.txt          every extra: the development and CI environment (.venv), without torch
    api.txt          what the API image runs: core + api + cloud + otel
    worker.txt       what the GPU worker image runs: core + api + worker + cloud + otel,
                     without torch
    torch-cpu.txt    torch's CPU build, for .venv and the tests
    torch-cuda.txt   torch's CUDA 12 build for the GPU image (written by hand: see below)
    build.txt        the build backend (setuptools) that turns the project into a wheel
    installers.txt   uv and pip themselves, for .venv
    checkov.txt      checkov, in its own .venv-checkov (it clashes with python-hcl2)

torch is the one dependency whose build depends on the hardware: the same version is the CPU
build in development and the CUDA 12 build on the L4 GPUs (PyPI's own torch 2.13.0 is built
for CUDA 13, which needs a newer driver than Cloud Run's). So the runtime locks carry torch's
own dependencies but not torch, and torch-cpu.txt / torch-cuda.txt pin its build per target.
The CPU wheel comes from a find-links location (TORCH_FIND_LINKS: the machine's pip find-links
where it has one, PyTorch's CPU page otherwise); its hash is in torch-cpu.txt either way.

api.txt, worker.txt and build.txt are resolved with dev.txt as constraints, so a package has
one version everywhere: the images run exactly what the tests ran.

`check` works offline. Each lock's first line holds a digest of its inputs (the dependency
tables of pyproject.toml and the *.in files); a lock whose digest differs was not written from
today's inputs. It also checks that every requirement of each set is pinned at a version its
specifier admits, and that the sets agree with one another.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess  # nosec B404 - runs uv and pip with argument lists, never a shell
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "tools" / "locks"
PYPROJECT = ROOT / "pyproject.toml"
DIGEST_LINE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
# The environment the locks are resolved for, to evaluate requirement markers the same way.
ENVIRONMENT = {
    "python_version": PYTHON_VERSION,
    "python_full_version": f"{PYTHON_VERSION}.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
PYTORCH_CPU_PAGE = "https://download.pytorch.org/whl/cpu/torch/"


@dataclass(frozen=True)
class LockSet:
    """One lock file: what it is resolved from and how."""

    name: str
    extras: tuple[str, ...] = ()
    input_file: str | None = None  # an *.in file beside the locks
    constrained_by_dev: bool = True
    without_torch: bool = True
    no_deps: bool = False
    needs_torch_wheels: bool = False

    @property
    def path(self) -> Path:
        return LOCKS / f"{self.name}.txt"


ALL_EXTRAS = ("api", "worker", "cloud", "otel", "flower", "dev")
API_EXTRAS = ("api", "cloud", "otel")
WORKER_EXTRAS = ("api", "worker", "cloud", "otel")

# In the order they are written: dev.txt first, the others take its versions.
SETS: tuple[LockSet, ...] = (
    LockSet("dev", extras=ALL_EXTRAS, constrained_by_dev=False, needs_torch_wheels=True),
    LockSet("api", extras=API_EXTRAS),
    LockSet("worker", extras=WORKER_EXTRAS, needs_torch_wheels=True),
    LockSet(
        "torch-cpu",
        constrained_by_dev=False,
        without_torch=False,
        no_deps=True,
        needs_torch_wheels=True,
    ),
    LockSet("build", without_torch=False),
    LockSet("installers", input_file="installers.in", constrained_by_dev=False),
    LockSet("checkov", input_file="checkov.in", constrained_by_dev=False),
)
BY_NAME = {s.name: s for s in SETS}
TORCH_CUDA = LOCKS / "torch-cuda.txt"


# ---- inputs -------------------------------------------------------------------------------------


def load_project(path: Path = PYPROJECT) -> dict[str, object]:
    with path.open("rb") as f:
        return tomllib.load(f)


def _table(project: Mapping[str, object], key: str) -> dict[str, Any]:
    """A table of pyproject.toml (empty where it has none)."""
    table = project.get(key, {})
    if not isinstance(table, dict):
        raise TypeError(f"pyproject.toml: [{key}] is not a table")
    return table


def inputs_digest(project: Mapping[str, object], locks: Path = LOCKS) -> str:
    """sha256 over everything the locks are resolved from, in a canonical form: a change in
    formatting or comments of pyproject.toml does not count, a changed requirement does."""
    table = _table(project, "project")
    build = _table(project, "build-system")
    payload = {
        "requires-python": table.get("requires-python"),
        "dependencies": table.get("dependencies", []),
        "optional-dependencies": table.get("optional-dependencies", {}),
        "build-system": build.get("requires", []),
        "inputs": {p.name: p.read_text() for p in sorted(locks.glob("*.in"))},
        "target": [PYTHON_VERSION, PLATFORM],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def requirements_of(project: Mapping[str, object], extras: Iterable[str]) -> list[Requirement]:
    """The project's core requirements and those of `extras`, markers evaluated for the
    locks' target (a requirement that does not apply there is left out)."""
    table = _table(project, "project")
    raw = list(table.get("dependencies", []))
    optional = table.get("optional-dependencies", {})
    for extra in extras:
        raw.extend(optional[extra])
    return [r for r in map(Requirement, raw) if applies(r.marker)]


def torch_requirements(project: Mapping[str, object]) -> list[Requirement]:
    """The worker extra's torch requirement(s): one, whose version both torch locks pin."""
    return [r for r in requirements_of(project, ("worker",)) if r.name == "torch"]


def applies(marker: Marker | None) -> bool:
    return marker is None or marker.evaluate(dict(ENVIRONMENT))


# ---- reading a lock ------------------------------------------------------------------------------


def read_pins(path: Path) -> dict[str, Version]:
    """name -> pinned version of a requirements lock (hash lines and comments skipped)."""
    pins: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = Version(match.group(3))
    return pins


def read_digest(path: Path) -> str | None:
    for line in path.read_text().splitlines()[:3]:
        match = DIGEST_LINE.match(line)
        if match:
            return match.group(1)
    return None


# ---- check ------------------------------------------------------------------------------------


def check(project: Mapping[str, object], locks: Path = LOCKS) -> list[str]:
    """Every way the locks disagree with pyproject.toml and with one another, as sentences."""
    problems: list[str] = []
    digest = inputs_digest(project, locks)
    pins_by_set: dict[str, dict[str, Version]] = {}
    for lock in SETS:
        path = locks / lock.path.name
        if not path.exists():
            problems.append(f"{path.name} is missing: run `make lock`")
            continue
        if read_digest(path) != digest:
            problems.append(
                f"{path.name} was not written from today's pyproject.toml and tools/locks/*.in "
                "(its inputs digest differs): run `make lock` and commit the result"
            )
        pins_by_set[lock.name] = read_pins(path)
    for lock in SETS:
        pins = pins_by_set.get(lock.name)
        if pins is None or not lock.extras:
            continue
        for requirement in requirements_of(project, lock.extras):
            name = canonicalize_name(requirement.name)
            if name == "torch" and lock.without_torch:
                continue
            if name not in pins:
                problems.append(f"{lock.path.name} does not pin {requirement.name}")
            elif not requirement.specifier.contains(pins[name], prereleases=True):
                problems.append(
                    f"{lock.path.name} pins {requirement.name}=={pins[name]}, outside "
                    f"{requirement.specifier} that pyproject.toml asks for"
                )
        if lock.without_torch and "torch" in pins:
            problems.append(f"{lock.path.name} pins torch: the torch-* locks carry it")
    dev = pins_by_set.get("dev", {})
    for set_name in ("api", "worker", "build"):
        for package, version in pins_by_set.get(set_name, {}).items():
            if package in dev and dev[package] != version:
                problems.append(
                    f"{set_name}.txt pins {package}=={version} but dev.txt {dev[package]}: "
                    "the images would run other versions than the tests"
                )
    problems.extend(_check_torch(project, pins_by_set.get("torch-cpu", {}), locks))
    return problems


def _check_torch(
    project: Mapping[str, object], cpu_pins: Mapping[str, Version], locks: Path
) -> list[str]:
    wanted = torch_requirements(project)
    if len(wanted) != 1:
        return ["the worker extra must require torch exactly once"]
    specifier = wanted[0].specifier
    problems = []
    torch_cpu = cpu_pins.get("torch")
    if torch_cpu is None or not specifier.contains(torch_cpu) or torch_cpu.local != "cpu":
        problems.append(f"torch-cpu.txt must pin a CPU build of torch{specifier}")
    cuda_path = locks / TORCH_CUDA.name
    cuda = read_pins(cuda_path).get("torch") if cuda_path.exists() else None
    if cuda is None or not specifier.contains(cuda) or not (cuda.local or "").startswith("cu12"):
        problems.append(f"torch-cuda.txt must pin a CUDA 12 build of torch{specifier}")
    return problems


# ---- compile ------------------------------------------------------------------------------------


def torch_find_links() -> str:
    """Where the CPU build of torch is found: TORCH_FIND_LINKS, or the machine's pip find-links
    (uv does not read pip's configuration), or PyTorch's CPU page."""
    configured = os.environ.get("TORCH_FIND_LINKS")
    if configured:
        return configured
    try:
        found = subprocess.run(  # nosec B603 - our own interpreter
            [sys.executable, "-m", "pip", "config", "get", "global.find-links"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        found = ""
    return found or PYTORCH_CPU_PAGE


def compile_command(
    lock: LockSet, uv: str, source: str, *, upgrade: bool, find_links: str
) -> list[str]:
    command = [
        uv,
        "pip",
        "compile",
        source,
        "--quiet",
        "--generate-hashes",
        "--python-version",
        PYTHON_VERSION,
        "--python-platform",
        PLATFORM,
        "--index-url",
        "https://pypi.org/simple",
        "--custom-compile-command",
        "make lock",
        "--output-file",
        str(lock.path.relative_to(ROOT)),
    ]
    for extra in lock.extras:
        command += ["--extra", extra]
    if lock.constrained_by_dev:
        command += ["--constraint", str(BY_NAME["dev"].path)]
    if lock.without_torch:
        command += ["--no-emit-package", "torch"]
    if lock.no_deps:
        command.append("--no-deps")
    if lock.needs_torch_wheels:
        command += ["--find-links", find_links]
    if upgrade:
        command.append("--upgrade")
    return command


def write_locks(uv: str, *, upgrade: bool, only: Sequence[str] = ()) -> None:
    project = load_project()
    digest = inputs_digest(project)
    links = torch_find_links()
    for lock in SETS:
        if only and lock.name not in only:
            continue
        source, text = _source_of(lock, project)
        subprocess.run(  # noqa: S603 - uv from .venv  # nosec B603
            compile_command(lock, uv, source, upgrade=upgrade, find_links=links),
            input=text,
            text=True,
            check=True,
            cwd=ROOT,
        )
        if lock.name == "torch-cpu":
            _hash_local_wheels(lock.path, links)
        _stamp(lock.path, digest)


def _source_of(lock: LockSet, project: Mapping[str, object]) -> tuple[str, str | None]:
    """What uv resolves: pyproject.toml with extras, an *.in file, or requirements written
    to its standard input ("-")."""
    if lock.extras:
        return str(PYPROJECT.relative_to(ROOT)), None
    if lock.input_file:
        return str((LOCKS / lock.input_file).relative_to(ROOT)), None
    if lock.name == "torch-cpu":
        return "-", "".join(f"{r}\n" for r in torch_requirements(project))
    if lock.name == "build":
        requires = _table(project, "build-system").get("requires", [])
        return "-", "".join(f"{r}\n" for r in requires)
    raise ValueError(f"no source for {lock.name}")


def _hash_local_wheels(path: Path, find_links: str) -> None:
    """uv records no hash for a wheel found in a local folder: add the sha256 of the file, so
    that the pin holds wherever it is installed from (PyPI's and PyTorch's files are the same
    bytes)."""
    folder = Path(find_links)
    if not folder.is_dir():
        return
    lines = path.read_text().splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        match = PIN.match(line)
        hashed = i + 1 < len(lines) and lines[i + 1].lstrip().startswith("--hash=")
        if match and not hashed and not line.rstrip().endswith("\\"):
            name, version = match.group(1), match.group(3)
            wheel = folder / f"{name}-{version}-cp311-cp311-manylinux_2_28_x86_64.whl"
            if wheel.is_file():
                sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
                out += [f"{line} \\", f"    --hash=sha256:{sha}"]
                continue
        out.append(line)
    path.write_text("\n".join(out) + "\n")


def _stamp(path: Path, digest: str) -> None:
    """The digest of the inputs as the lock's first line."""
    lines = [line for line in path.read_text().splitlines() if not DIGEST_LINE.match(line)]
    path.write_text("\n".join([f"# inputs-sha256: {digest}", *lines]) + "\n")


# ---- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/locks.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="exit 1 if a lock disagrees with its inputs (offline)")
    for name, text in (
        ("compile", "write the locks, keeping every pin that still fits"),
        ("upgrade", "write the locks with the newest versions that fit"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--uv", default=str(Path(sys.executable).with_name("uv")))
        sub.add_argument("--only", nargs="*", default=(), choices=sorted(BY_NAME))
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = check(load_project())
        for problem in problems:
            print(f"lock: {problem}", file=sys.stderr)  # noqa: T201
        return 1 if problems else 0
    write_locks(args.uv, upgrade=args.command == "upgrade", only=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
