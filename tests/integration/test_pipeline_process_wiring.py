"""build_engine with PIPELINE_PROCESS (the default): the serving process never imports torch,
and with PIPELINE_CPUS the pipeline and the serving threads run on separate CPUs. Each case
runs in a fresh interpreter, since this test process has torch loaded already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys, threading
from pathlib import Path
from dal.settings import Settings
from dal.records import GenerationRequest
from gpu_worker.wiring import build_engine

settings = Settings(app_env="test", model_path=Path(sys.argv[1]), **json.loads(sys.argv[2]))
generator = build_engine(settings)
images = generator.generate(GenerationRequest("a fox", None, 64, 64, 2, 1.0, (1,)))
child = getattr(generator.engine, "pid", None)  # None: the engine is in this process
late = threading.Thread(target=lambda: None)  # a thread started after pinning
late.start(); late.join()


def cpus_of_live_threads():
    # join() returns before the OS thread is quite gone: a task listed here may vanish
    # before its affinity is read, and a gone thread runs nowhere.
    cpus = set()
    for task in os.listdir("/proc/self/task"):
        try:
            cpus.update(os.sched_getaffinity(int(task)))
        except ProcessLookupError:
            continue
    return sorted(cpus)


print(json.dumps({
    "images": len(images),
    "torch_imported": "torch" in sys.modules,
    "child_pid": child,
    "engine": type(generator.engine).__name__,
    "child_cpus": sorted(os.sched_getaffinity(child)) if child else None,
    "serving_cpus": sorted(os.sched_getaffinity(0)),
    "other_threads_cpus": cpus_of_live_threads(),
}))
generator.close()
"""


def run(model: Path, **settings: object) -> dict[str, object]:
    done = subprocess.run(  # nosec B603 - our own script
        [sys.executable, "-c", SCRIPT, str(model), json.dumps(settings)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_serving_process_never_imports_torch(tiny_model_dir: Path) -> None:
    result = run(tiny_model_dir)
    assert result["images"] == 1
    assert result["torch_imported"] is False
    assert result["child_pid"] != os.getpid()


def test_without_a_pipeline_process_the_engine_loads_in_this_process(
    tiny_model_dir: Path,
) -> None:
    result = run(tiny_model_dir, pipeline_process=False)
    assert result["images"] == 1
    assert result["engine"] == "DiffusionEngine"
    assert result["child_pid"] is None and result["torch_imported"] is True


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two CPUs")
def test_pipeline_cpus_auto_keeps_the_pipeline_and_the_server_apart(tiny_model_dir: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    result = run(tiny_model_dir, pipeline_cpus="auto")
    assert result["child_cpus"] == allowed[:-1]
    assert result["serving_cpus"] == result["other_threads_cpus"] == allowed[-1:]
