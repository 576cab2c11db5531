"""Worker cold start, split: interpreter + imports, model load, warm-up generation. Run as a
fresh process (`python -m bench.cold_start --model PATH`), which is the point."""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402 - timing the imports is what this module is for
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    args = parser.parse_args()
    import diffusers  # noqa: F401
    import torch  # noqa: F401

    from gpu_worker.engine import DiffusionEngine

    imported = time.perf_counter()
    engine = DiffusionEngine(args.model)
    engine.load()
    loaded = time.perf_counter()
    engine.warm_up()
    warmed = time.perf_counter()
    print(  # noqa: T201 - the output is the point
        json.dumps(
            {
                "import_s": round(imported - STARTED, 3),
                "load_s": round(loaded - imported, 3),
                "warm_up_s": round(warmed - loaded, 3),
                "total_s": round(warmed - STARTED, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
