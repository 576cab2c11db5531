"""The physical limit: images/s of the pipeline call itself, in process, at batch 1 and at
MAX_BATCH_SIZE. Run as its own process (`python -m bench.limit`) so the caller stays free of
torch, and on its main thread, as the worker's pipeline process runs it. `--threads` and
`--cpus` give it the service's configuration (TORCH_THREADS, PIPELINE_CPUS). Prints one JSON
object."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from dal.records import GenerationRequest


def measure(
    model: Path,
    *,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    batches: list[int],
    seconds: float,
    threads: int | None = None,
    service_threads: bool = False,
    pinned: bool = False,
) -> dict[str, object]:
    import torch

    from gpu_worker.engine import DiffusionEngine
    from gpu_worker.engine_process import pipeline_threads

    if service_threads:
        # The worker's own rule (TORCH_THREADS=0), so the limit is the pipeline as it runs.
        device = "cuda" if torch.cuda.is_available() else "cpu"
        threads = pipeline_threads(0, device, pinned=pinned)
    if threads:
        torch.set_num_threads(threads)
    engine = DiffusionEngine(model)
    engine.load()
    engine.warm_up()
    results: dict[str, object] = {
        "device": engine.device,
        "torch_threads": torch.get_num_threads(),
        "cpus": sorted(os.sched_getaffinity(0)),
    }
    for batch in batches:
        requests = [
            GenerationRequest(f"benchmark prompt {i}", None, width, height, steps, guidance, (i,))
            for i in range(batch)
        ]
        engine.run_pipeline(requests)  # warm this shape
        calls = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or calls < 3:
            engine.run_pipeline(requests)
            calls += 1
        elapsed = time.perf_counter() - started
        results[f"batch_{batch}"] = {
            "images_per_s": round(calls * batch / elapsed, 2),
            "seconds_per_call": round(elapsed / calls, 5),
            "calls": calls,
        }
    return results


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--service-threads",
        action="store_true",
        help="as many threads as the worker's pipeline process takes (TORCH_THREADS=0)",
    )
    parser.add_argument("--cpus", help="run on these CPUs only (taskset notation)")
    args = parser.parse_args()
    if args.cpus:
        from gpu_worker.cpu_pinning import parse_cpu_list

        os.sched_setaffinity(0, parse_cpu_list(args.cpus))
    print(  # noqa: T201 - the output is the point
        json.dumps(
            measure(
                args.model,
                width=args.width,
                height=args.height,
                steps=args.steps,
                guidance=args.guidance,
                batches=args.batches,
                seconds=args.seconds,
                threads=args.threads or None,
                service_threads=args.service_threads,
                pinned=bool(args.cpus),
            )
        )
    )


if __name__ == "__main__":
    main()
