"""The project's import graph, read from the source (every import: at module level, inside
functions, under `if TYPE_CHECKING:`), and the rules it must keep:

* the packages run one way, `dal` <- `gpu_worker` <- `api`: nothing in `dal` imports
  `gpu_worker` or `api`, nothing in `gpu_worker` imports `api`;
* the Python SDK, `txt2img_client` (clients/python, a distribution of its own), imports no
  other package of the project; `api` may import it (the `txt2img` CLI is built on it), `dal`
  and `gpu_worker` may not;
* no module imports itself back through others (no circle).

    python tools/import_graph.py check    # exit 1 naming each broken rule
    python tools/import_graph.py show     # the arrows between packages, with counts

An import names the most specific module that exists: `from dal.pubsub import message` is an
arrow to dal/pubsub/message.py, `from dal.pubsub import DeadLetter` one to dal/pubsub/__init__.py.
A package's __init__ importing its own submodules is the package, not a circle, so the arrow
Python adds implicitly (a submodule's import runs its package's __init__ first) is not drawn.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dal", "gpu_worker", "api", "txt2img_client", "emulators", "bench", "tools")
# Where a package's folder is, when it is not at the top level.
LOCATIONS: Mapping[str, str] = {"txt2img_client": "clients/python/txt2img_client"}
# Which packages each layer may import (besides its own and third-party ones).
LAYERS: Mapping[str, frozenset[str]] = {
    "txt2img_client": frozenset(),
    "dal": frozenset(),
    "gpu_worker": frozenset({"dal"}),
    "api": frozenset({"dal", "gpu_worker", "txt2img_client"}),
}
# Packages installed on their own: they may import no package of the project at all (not
# even one outside the layers, such as `tools`), whatever LAYERS allows.
STANDALONE = frozenset({"txt2img_client"})


@dataclass(frozen=True, slots=True)
class Arrow:
    source: str  # module name, e.g. "api.wiring"
    target: str
    line: int


def module_files(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every .py file of the packages under `root`."""
    modules: dict[str, Path] = {}
    for package in packages:
        folder = root / LOCATIONS.get(package, package)
        for path in sorted(folder.rglob("*.py")):
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def arrows(root: Path, packages: Iterable[str] = PACKAGES) -> list[Arrow]:
    modules = module_files(root, packages)
    found: list[Arrow] = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _imported(node, name, is_package, modules):
                    if target != name:
                        found.append(Arrow(name, target, node.lineno))
    return found


def _imported(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: Mapping[str, Path]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [m for alias in node.names if (m := _known(alias.name, modules))]
    base = _absolute(node, module, is_package)
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        target = submodule if submodule in modules else _known(base, modules)
        if target:
            targets.append(target)
    return targets


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    # `from . import x` in a package's __init__ is relative to the package itself.
    keep = len(parts) - node.level + (1 if is_package else 0)
    prefix = ".".join(parts[:keep])
    return f"{prefix}.{node.module}" if node.module else prefix


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of `name` that is one of our modules (None: a third-party one)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def layer_violations(found: Iterable[Arrow]) -> list[Arrow]:
    bad = []
    for arrow in found:
        source, target = arrow.source.split(".")[0], arrow.target.split(".")[0]
        allowed = LAYERS.get(source)
        if allowed is None or target == source or target in allowed:
            continue
        if target in LAYERS or source in STANDALONE:
            bad.append(arrow)
    return bad


def _rule(package: str) -> str:
    if package in STANDALONE:
        return f"{package} is installed on its own and may import no package of the project"
    return f"{package} may import only {sorted(LAYERS[package])}"


def circles(found: Iterable[Arrow]) -> list[list[str]]:
    """Each strongly connected set of two or more modules (Tarjan), as a sorted list."""
    graph: dict[str, set[str]] = {}
    for arrow in found:
        graph.setdefault(arrow.source, set()).add(arrow.target)
        graph.setdefault(arrow.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(node: str) -> None:
        # Iterative, so a deep chain of imports cannot exhaust Python's recursion limit.
        work = [(node, iter(sorted(graph[node])))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    if len(component) > 1:
                        result.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[current] = min(low[current], index[child])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(result)


def problems(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> list[str]:
    found = arrows(root, packages)
    lines = [
        f"{a.source} (line {a.line}) imports {a.target}: {_rule(a.source.split('.')[0])}"
        for a in layer_violations(found)
    ]
    lines += [f"circle: {' <-> '.join(component)}" for component in circles(found)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/import_graph.py", description=__doc__)
    parser.add_argument("command", choices=("check", "show"))
    args = parser.parse_args(argv)
    if args.command == "show":
        counts = Counter(
            (a.source.split(".")[0], a.target.split(".")[0])
            for a in arrows(ROOT)
            if a.source.split(".")[0] != a.target.split(".")[0]
        )
        for (source, target), count in sorted(counts.items()):
            sys.stdout.write(f"{source} -> {target}: {count}\n")
        return 0
    found = problems()
    for line in found:
        sys.stderr.write(line + "\n")
    if not found:
        sys.stdout.write(
            "import graph: one way (dal <- gpu_worker <- api -> txt2img_client, which imports "
            "none of them), no circles\n"
        )
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
