"""The packages import one way (dal <- gpu_worker <- api), the Python SDK (txt2img_client, in
clients/python) imports none of the project's packages, and no module imports itself back,
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


PACKAGES = ("dal", "gpu_worker", "api", "txt2img_client", "tools")
SDK = "clients/python/txt2img_client"
INITS = {
    "dal/__init__.py": "",
    "gpu_worker/__init__.py": "",
    "api/__init__.py": "",
    f"{SDK}/__init__.py": "",
    "tools/__init__.py": "",
}


def test_the_project_runs_one_way_without_circles() -> None:
    assert problems(ROOT) == []


def test_the_project_graph_is_read_at_all() -> None:
    """Guards the guard: the reader sees the arrows everyone knows are there."""
    found = {(a.source, a.target) for a in arrows(ROOT)}
    assert ("api.wiring", "gpu_worker.wiring") in found
    assert ("gpu_worker.runner", "dal.finisher") in found
    assert ("dal.core", "dal.finisher") in found
    assert ("api.cli", "txt2img_client") in found
    assert ("txt2img_client._sync", "txt2img_client._calls") in found


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


class TestTheSdk:
    """txt2img_client is installed on its own (clients/python): it may import nothing of the
    project, while the API may import it."""

    def test_the_sdk_may_not_import_a_layer(self, tmp_path: Path) -> None:
        root = write(
            tmp_path,
            {
                **INITS,
                "dal/records.py": "X = 1\n",
                f"{SDK}/_models.py": "from dal.records import X\n",
            },
        )
        (bad,) = layer_violations(arrows(root, PACKAGES))
        assert (bad.source, bad.target) == ("txt2img_client._models", "dal.records")
        assert "installed on its own" in problems(root, PACKAGES)[0]

    def test_the_sdk_may_not_import_a_package_outside_the_layers(self, tmp_path: Path) -> None:
        root = write(
            tmp_path,
            {
                **INITS,
                "tools/locks.py": "",
                f"{SDK}/_retry.py": "def f():\n    import tools.locks\n",
            },
        )
        assert [(a.source, a.target) for a in layer_violations(arrows(root, PACKAGES))] == [
            ("txt2img_client._retry", "tools.locks")
        ]

    def test_the_api_may_import_the_sdk_and_the_worker_may_not(self, tmp_path: Path) -> None:
        root = write(
            tmp_path,
            {
                **INITS,
                f"{SDK}/_sync.py": "class Client: ...\n",
                "api/cli.py": "from txt2img_client._sync import Client\n",
                "gpu_worker/hooks.py": "from txt2img_client import _sync\n",
            },
        )
        assert [(a.source, a.target) for a in layer_violations(arrows(root, PACKAGES))] == [
            ("gpu_worker.hooks", "txt2img_client._sync")
        ]

    def test_the_sdk_importing_itself_relatively_is_fine(self, tmp_path: Path) -> None:
        root = write(
            tmp_path,
            {
                **INITS,
                f"{SDK}/_models.py": "",
                f"{SDK}/_errors.py": "from ._models import Job\n",
            },
        )
        found = {(a.source, a.target) for a in arrows(root, PACKAGES)}
        assert ("txt2img_client._errors", "txt2img_client._models") in found
        assert problems(root, PACKAGES) == []
