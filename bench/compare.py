"""`python -m bench.compare REF`: the serving CPU per job of this working tree against git
revision REF, measured side by side, for each flow of `bench.flows` (issue 19).

Why side by side: this machine's speed drifts by a fifth from one minute to the next, so two
`make bench` runs minutes apart cannot tell a change of a few percent from the drift. Here
both services run at once, each from its own copy of the code, on the embedded profile at the
user's defaults (`bench.flows`' settings), and one client alternates blocks of jobs between
them, the order swapped every round: whatever the machine does meanwhile weighs on both. CPU
is each service's threads' run time to the nanosecond (`live_threads_cpu_s`): a block of 20
jobs is about ten of /proc's clock ticks.

Why twice: of two identical services started one after the other, the one started second
measured less CPU per job in ten of eleven pairs here, by up to 0.45 ms (docs/performance.md,
"An eleventh round"). So the
comparison runs once with REF started first and once with the working tree first, and the
effect is the mean of the two differences; half their gap is that start-order bias, printed
so that a reader can see how large it was.

REF's files come from `git archive` into a temporary folder and run on this checkout's
virtual environment: a REF whose dependencies differ is not compared fairly. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess  # nosec B404 # git and our own service, fixed arguments
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import KEY, service_env
from bench.cpu_time import live_threads_cpu_s
from bench.flows import FLOWS, one_job
from emulators.process import Service, free_port, http_ready, start_process, stop_service
from emulators.stack import ensure_tiny_model

REPO = Path(__file__).resolve().parents[1]
WARM_UP_JOBS = 30


@dataclass(frozen=True)
class Effect:
    """What one pair of runs says: REF's and the tree's CPU per job (means of both runs),
    the tree's effect with the start order's bias taken out, and that bias: how much less
    the service started second read."""

    ref_ms: float
    tree_ms: float
    effect_ms: float
    start_order_bias_ms: float


def estimate(ref_first: tuple[float, float], tree_first: tuple[float, float]) -> Effect:
    """From (REF, tree) CPU per job in the run that started REF first and in the run that
    started the tree first. Started second, a service reads `bias` cheaper, so the first run
    measures effect - bias and the second effect + bias."""
    with_ref_first = ref_first[1] - ref_first[0]
    with_tree_first = tree_first[1] - tree_first[0]
    return Effect(
        ref_ms=round((ref_first[0] + tree_first[0]) / 2, 3),
        tree_ms=round((ref_first[1] + tree_first[1]) / 2, 3),
        effect_ms=round((with_ref_first + with_tree_first) / 2, 3),
        start_order_bias_ms=round((with_tree_first - with_ref_first) / 2, 3),
    )


def export_revision(ref: str, into: Path) -> Path:
    """REF's tracked files under `into` (raises CalledProcessError for an unknown REF)."""
    archive = subprocess.run(  # noqa: S603 - fixed arguments  # nosec B603 B607
        ["git", "archive", "--format=tar", ref],  # noqa: S607 - git from PATH, as make's
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


@contextmanager
def serving(
    name: str, code: Path, model: Path, work: Path
) -> Iterator[tuple[Service, httpx.Client]]:
    """`python -m api` from the code under `code` (`-P` and PYTHONPATH: not from the current
    folder, nor from the checkout this environment was installed from)."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))  # a database of its own
    env = service_env(work / "data", model, APP_ENV="local", PORT=str(port))
    env["PYTHONPATH"] = str(code)
    url = f"http://127.0.0.1:{port}"
    service = start_process(
        f"compare-{name}",
        [sys.executable, "-P", "-m", "api"],
        host="127.0.0.1",
        port=port,
        state_dir=work / "logs",
        env=env,
        timeout=180,
        ready=lambda: http_ready(url),
    )
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as client:
            yield service, client
    finally:
        stop_service(service)


def side_by_side(
    codes: dict[str, Path], model: Path, work: Path, *, flow: str, jobs: int, block: int
) -> dict[str, float]:
    """CPU ms per job of each service, started in `codes`' order, over `jobs` jobs each."""
    with ExitStack() as stack:
        running = {
            name: stack.enter_context(serving(name, code, model, work))
            for name, code in codes.items()
        }
        seed = 0
        for _, client in running.values():
            for _ in range(WARM_UP_JOBS):
                seed += 1
                one_job(client, flow, seed)
        spent = dict.fromkeys(running, 0.0)
        done = dict.fromkeys(running, 0)
        names = list(running)
        round_number = 0
        while min(done.values()) < jobs:
            for name in names if round_number % 2 == 0 else names[::-1]:
                service, client = running[name]
                pid = service.pid
                if pid is None:
                    raise RuntimeError(f"the {name} service has no process id")
                before = live_threads_cpu_s(pid)
                for _ in range(block):
                    seed += 1
                    one_job(client, flow, seed)
                spent[name] += live_threads_cpu_s(pid) - before
                done[name] += block
            round_number += 1
    return {name: spent[name] * 1000 / done[name] for name in names}


def compare(ref: str, *, jobs: int, block: int, flows: tuple[str, ...]) -> dict[str, Any]:
    model = ensure_tiny_model(REPO / ".data" / "bench" / "tiny-sd")
    with tempfile.TemporaryDirectory(prefix="txt2img-compare-") as temporary:
        work = Path(temporary)
        code = {"ref": export_revision(ref, work / "ref-code"), "tree": REPO}
        result: dict[str, Any] = {"ref": ref, "jobs_per_service_and_run": jobs, "block": block}
        for flow in flows:
            ref_first = side_by_side(code, model, work, flow=flow, jobs=jobs, block=block)
            tree_first = side_by_side(
                {"tree": code["tree"], "ref": code["ref"]},
                model,
                work,
                flow=flow,
                jobs=jobs,
                block=block,
            )
            effect = estimate(
                (ref_first["ref"], ref_first["tree"]), (tree_first["ref"], tree_first["tree"])
            )
            result[flow] = {
                "serving_cpu_ms_per_job": {"ref": effect.ref_ms, "tree": effect.tree_ms},
                "tree_minus_ref_ms": effect.effect_ms,
                "start_order_bias_ms": effect.start_order_bias_ms,
                "runs": {
                    "ref_started_first": {k: round(v, 3) for k, v in ref_first.items()},
                    "tree_started_first": {k: round(v, 3) for k, v in tree_first.items()},
                },
            }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("ref", help="the git revision to compare the working tree with")
    parser.add_argument("--jobs", type=int, default=300, help="jobs per service and run")
    parser.add_argument("--block", type=int, default=20, help="jobs in a row on one service")
    parser.add_argument("--flow", choices=FLOWS, action="append", dest="flows")
    args = parser.parse_args()
    flows = tuple(args.flows or FLOWS)
    print(json.dumps(compare(args.ref, jobs=args.jobs, block=args.block, flows=flows)))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
