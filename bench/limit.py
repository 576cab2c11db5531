"""The physical limit: images/s of the pipeline call itself, in process, at batch 1 and at
MAX_BATCH_SIZE. Run as its own process (`python -m bench.limit`) so the caller stays free of
torch. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from gpu_worker.generation import GenerationRequest


def measure(
    model: Path,
    *,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    batches: list[int],
    seconds: float,
) -> dict[str, object]:
    from gpu_worker.engine import DiffusionEngine

    engine = DiffusionEngine(model)
    engine.load()
    engine.warm_up()
    results: dict[str, object] = {"device": engine.device}
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
    args = parser.parse_args()
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
            )
        )
    )


if __name__ == "__main__":
    main()
