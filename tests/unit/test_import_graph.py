"""The packages import one way (dal <- gpu_worker <- api) and no module imports itself back,
counting every import: inside functions and under TYPE_CHECKING too (tools/import_graph.py).
Run by `make lint`."""

from __future__ import annotations

from pathlib import Path

from tools.import_graph import ROOT, arrows, circles, layer_violations, problems


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


PACKAGES = ("dal", "gpu_worker", "api")
INITS = {"dal/__init__.py": "", "gpu_worker/__init__.py": "", "api/__init__.py": ""}


def test_the_project_runs_one_way_without_circles() -> None:
    assert problems(ROOT) == []


def test_the_project_graph_is_read_at_all() -> None:
    """Guards the guard: the reader sees the arrows everyone knows are there."""
    found = {(a.source, a.target) for a in arrows(ROOT)}
    assert ("api.wiring", "gpu_worker.wiring") in found
    assert ("gpu_worker.runner", "dal.finisher") in found
    assert ("dal.core", "dal.finisher") in found


def test_an_import_inside_a_function_against_the_layers_is_caught(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            **INITS,
            "api/routes.py": "X = 1\n",
            "dal/store.py": "def f():\n    from api.routes import X\n    return X\n",
        },
    )
    (bad,) = layer_violations(arrows(root, PACKAGES))
    assert (bad.source, bad.target, bad.line) == ("dal.store", "api.routes", 2)
    assert problems(root, PACKAGES) != []


def test_gpu_worker_may_not_import_api(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {**INITS, "api/webhooks.py": "", "gpu_worker/wiring.py": "import api.webhooks\n"},
    )
    assert [(a.source, a.target) for a in layer_violations(arrows(root, PACKAGES))] == [
        ("gpu_worker.wiring", "api.webhooks")
    ]


def test_a_circle_held_by_a_type_checking_guard_is_caught(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            **INITS,
            "api/views.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from api.wiring import Services\n"
            ),
            "api/hooks.py": "from .views import render\n",
            "api/wiring.py": "from api import hooks\n",
        },
    )
    assert circles(arrows(root, PACKAGES)) == [["api.hooks", "api.views", "api.wiring"]]


def test_a_package_init_re_exporting_its_modules_is_no_circle(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            **INITS,
            "dal/pubsub/__init__.py": "from dal.pubsub.queue import Queue\n",
            "dal/pubsub/queue.py": "from dal.pubsub.message import encode\nQueue = 1\n",
            "dal/pubsub/message.py": "def encode(): ...\n",
            "gpu_worker/pull.py": "from dal.pubsub import Queue\nfrom dal.pubsub import message\n",
        },
    )
    found = {(a.source, a.target) for a in arrows(root, PACKAGES)}
    assert ("gpu_worker.pull", "dal.pubsub") in found
    assert ("gpu_worker.pull", "dal.pubsub.message") in found
    assert problems(root, PACKAGES) == []
