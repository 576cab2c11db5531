"""`make soak`: start the emulator stack, run the load scenario for a while, print the JSON
summary; exit status 1 unless everything reconciled.

SOAK_USERS (default 20), SOAK_KEYS (10), SOAK_DURATION_S (180) and SOAK_SPAWN_RATE (5) set
the load; REDIS_URL the Redis to use (default redis://127.0.0.1:6379/15).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from emulators.stack import StackConfig, start_stack
from tests.load.runner import LOAD_ENV, LoadPlan, run_load

SOAK_DIR = Path(".data/soak")


def main() -> int:
    plan = LoadPlan(
        users=int(os.environ.get("SOAK_USERS", "20")),
        keys=int(os.environ.get("SOAK_KEYS", "10")),
        duration_s=int(os.environ.get("SOAK_DURATION_S", "180")),
        spawn_rate=float(os.environ.get("SOAK_SPAWN_RATE", "5")),
        drain_timeout_s=300,
    )
    config = StackConfig(
        state_dir=SOAK_DIR / "logs",
        data_dir=SOAK_DIR / "data",
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        min_backoff_s=1,
        max_backoff_s=10,
        extra_env=LOAD_ENV,
    )
    print(f"[soak] starting the emulator stack; logs in {config.state_dir}", file=sys.stderr)  # noqa: T201
    stack = start_stack(config)
    try:
        print(f"[soak] {plan}", file=sys.stderr)  # noqa: T201
        summary = run_load(
            env=stack.env,
            api_url=stack.api_url,
            worker_url=stack.worker_url,
            plan=plan,
            workdir=SOAK_DIR / "run",
        )
    finally:
        stack.stop()
    print(json.dumps(summary, indent=2))  # noqa: T201
    return 0 if summary["reconciled"] else 1


if __name__ == "__main__":
    sys.exit(main())
