"""`make bench` / `python -m bench`: the limit, end-to-end throughput and added latency on the
embedded profile and the emulator stack, API submit rate, and worker cold start, as one JSON
document (printed, and written to --out).

Every ratio is taken within this run: the limit is measured on the same machine, minutes
before the end-to-end figures it is compared with. The limit is the pipeline as the service
runs it (its own process, TORCH_THREADS' rule, PIPELINE_CPUS); `limit_all_cores` is the same
pipeline alone on every core, for reference.

On a CPU the embedded service runs with PIPELINE_CPUS=auto, and the client threads, which
stand in for remote clients, are kept on the serving CPUs (--no-pin turns both off).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import subprocess  # nosec B404 # runs our own modules; each call is checked (B603)
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.clients import run_clients, submit_rate
from bench.cpu_time import CpuMeter
from bench.stats import ms, percentile
from bench.worker_start import worker_start_to_ready_s
from emulators.process import (
    Service,
    ServiceUnavailable,
    free_port,
    http_ready,
    start_process,
    stop_service,
)
from emulators.stack import ensure_tiny_model
from gpu_worker.cpu_pinning import CpuSplit, allowed_cpus, pin_this_process, split_cpus

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)  # noqa: T201


def run_json(module: str, *args: str, env: dict[str, str] | None = None) -> Any:
    done = subprocess.run(  # noqa: S603 - our own modules, fixed arguments  # nosec B603
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def service_env(data_dir: Path, model: Path, **extra: str) -> dict[str, str]:
    # LOG_LEVEL and ACCESS_LOG keep their defaults: what a service logs is part of what a
    # request costs its user.
    return {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "MODEL_PATH": str(model),
        "BOOTSTRAP_API_KEY": KEY,
        "RATE_LIMIT_SUBMIT_PER_MINUTE": "1000000",
        "RATE_LIMIT_SUBMIT_BURST": "1000000",
        "RATE_LIMIT_READ_PER_MINUTE": "1000000",
        "RATE_LIMIT_READ_BURST": "1000000",
        "DEDUPE_SEEDED_REQUESTS": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        **extra,
    }


def start_api(name: str, port: int, env: dict[str, str], logs: Path) -> Service:
    """`python -m api` with `env`, once it answers on `port`."""
    url = f"http://127.0.0.1:{port}"
    return start_process(
        name,
        [sys.executable, "-m", "api"],
        host="127.0.0.1",
        port=port,
        state_dir=logs,
        env=env,
        timeout=180,
        ready=lambda: http_ready(url),
    )


def end_to_end(
    base_url: str,
    key: str,
    *,
    body: dict[str, Any],
    seconds: float,
    limit: dict[str, Any],
    max_batch: int,
    client_counts: list[int],
    all_cores: dict[str, Any] | None = None,
    clients_on: tuple[int, ...] | None = None,
    service_pid: int | None = None,
    service_batch: int | None = None,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for clients in client_counts:
        log(f"{clients} client(s) for {seconds:.0f} s at {base_url}")
        meter = CpuMeter(service_pid) if service_pid is not None else None
        with cpus_of_this_process(clients_on):
            measured = run_clients(
                base_url, key, clients=clients, seconds=seconds, warm_up_s=3, body=body
            )
        if meter is not None:
            # The whole run, warm-up included, over every job it finished.
            measured["cpu_ms_per_job"] = meter.per_job_ms(measured.pop("jobs_total"))
        else:
            measured.pop("jobs_total")
        # The pipeline time of one job is the call it ran in: alone, or in a full batch (of
        # the service's MAX_BATCH_SIZE, which is 1 for the unbatched run).
        batch = min(clients * body.get("num_images", 1), service_batch or max_batch)
        reference = limit.get(f"batch_{batch}") or limit[f"batch_{max_batch}"]
        pipeline_s = reference["seconds_per_call"]
        added = [latency - pipeline_s for latency in measured.pop("latencies_s")]
        limit_ips = limit[f"batch_{max_batch}"]["images_per_s"]
        results[f"clients_{clients}"] = {
            **measured,
            "pipeline_ms_per_job": ms(pipeline_s),
            "added_latency_ms": {
                "p50": ms(percentile(added, 50)),
                "p95": ms(percentile(added, 95)),
            },
            "ratio_to_limit_at_max_batch": round(measured["images_per_s"] / limit_ips, 3),
        }
        if all_cores is not None:
            best = all_cores[f"batch_{max_batch}"]["images_per_s"]
            results[f"clients_{clients}"]["ratio_to_all_cores_limit"] = round(
                measured["images_per_s"] / best, 3
            )
    return results


@contextlib.contextmanager
def cpus_of_this_process(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """Run the client threads on `cpus` (None: leave them be), then give every CPU back."""
    if cpus is None:
        yield
        return
    everything = tuple(sorted(allowed_cpus()))
    pin_this_process(cpus)
    try:
        yield
    finally:
        pin_this_process(everything)


def embedded(
    model: Path,
    work: Path,
    *,
    body: dict[str, Any],
    seconds: float,
    limit: dict[str, Any],
    max_batch: int,
    batch_size: int,
    split: CpuSplit | None,
    all_cores: dict[str, Any],
    fair_dispatch: bool = True,
    measure_submits: bool = True,
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = service_env(
        work / f"embedded-b{batch_size}{'' if fair_dispatch else '-fcfs'}",
        model,
        APP_ENV="local",
        PORT=str(port),
        MAX_BATCH_SIZE=str(batch_size),
        INLINE_WORKERS=str(max(batch_size, 1) * 2),
        # 0: no line, every job handed over at once (first come, first served).
        **({} if fair_dispatch else {"DISPATCH_CAPACITY": "0"}),
        **({"PIPELINE_CPUS": ",".join(map(str, split.pipeline))} if split else {}),
    )
    log(f"starting the embedded service (MAX_BATCH_SIZE={batch_size}, fair={fair_dispatch})")
    service = start_api("bench-api", port, env, work / "logs")
    try:
        counts = [1, 16] if batch_size > 1 else [16]
        result = end_to_end(
            url,
            KEY,
            body=body,
            seconds=seconds,
            limit=limit,
            max_batch=max_batch,
            client_counts=counts,
            all_cores=all_cores,
            clients_on=split.serving if split else None,
            service_pid=service.pid,
            service_batch=batch_size,
        )
        if batch_size > 1 and measure_submits:
            log("API submit rate, 32 clients")
            with cpus_of_this_process(split.serving if split else None):
                result["submit"] = submit_rate(
                    url, KEY, clients=32, requests_per_client=25, body=body
                )
        return result
    finally:
        stop_service(service)


def emulator_stack(
    model: Path,
    work: Path,
    *,
    body: dict[str, Any],
    seconds: float,
    limit: dict[str, Any],
    max_batch: int,
) -> dict[str, Any]:
    from emulators.stack import StackConfig, start_stack

    log("starting the emulator stack")
    stack = start_stack(
        StackConfig(
            state_dir=work / "stack-logs",
            data_dir=work / "stack-data",
            model_path=model,
            api_key=KEY,
            redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
            log_level="warning",
            extra_env={
                k: v
                for k, v in service_env(work, model).items()
                if k.startswith(("RATE_LIMIT_", "DEDUPE_"))
            },
        )
    )
    try:
        return end_to_end(
            stack.api_url,
            stack.api_key,
            body=body,
            seconds=seconds,
            limit=limit,
            max_batch=max_batch,
            client_counts=[1, 16],
        )
    finally:
        stack.stop()


def dispatch_cost(fair: list[dict[str, Any]], off: list[dict[str, Any]]) -> dict[str, Any]:
    """What the fair dispatcher adds on the idle embedded profile (1 client) and under load
    (16 clients), against the same service without it: the median of each side's runs."""

    def median(runs: list[dict[str, Any]], clients: str, *path: str) -> float:
        values = []
        for run in runs:
            value: Any = run[clients]
            for name in path:
                value = value[name]
            values.append(float(value))
        return round(statistics.median(values), 2)

    idle = {
        side: median(runs, "clients_1", "added_latency_ms", "p50")
        for side, runs in (("fair", fair), ("off", off))
    }
    busy = {
        side: median(runs, "clients_16", "images_per_s")
        for side, runs in (("fair", fair), ("off", off))
    }
    return {
        "runs_each": len(fair),
        "added_latency_p50_ms_clients_1": idle,
        "added_latency_p50_delta_ms": round(idle["fair"] - idle["off"], 2),
        "images_per_s_clients_16": busy,
        "images_per_s_ratio": round(busy["fair"] / max(busy["off"], 1e-9), 3),
    }


def cold_start(model: Path, work: Path) -> dict[str, Any]:
    log("cold start (fresh processes)")
    started = time.perf_counter()
    split: dict[str, Any] = run_json("bench.cold_start", "--model", str(model))
    split["process_s"] = round(time.perf_counter() - started, 3)
    port = free_port()
    env = service_env(
        work / "cold", model, APP_ENV="test", JOB_QUEUE="pubsub", WORKER_PORT=str(port)
    )
    split["worker_start_to_ready_s"] = round(worker_start_to_ready_s(env, timeout_s=180), 3)
    return split


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--model", type=Path, help="a diffusers folder (default: the tiny model)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per run")
    parser.add_argument("--skip-emulator", action="store_true")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="no PIPELINE_CPUS for the embedded service, clients on every CPU",
    )
    parser.add_argument("--out", type=Path, default=REPO / ".data" / "bench" / "results.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="txt2img-bench-"))
    model = args.model or ensure_tiny_model(REPO / ".data" / "bench" / "tiny-sd")
    body = {
        "prompt": "a lighthouse on a cliff at dawn",
        "width": args.width,
        "height": args.height,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
    }
    started = time.perf_counter()
    shape = [
        "--model",
        str(model),
        "--width",
        str(args.width),
        "--height",
        str(args.height),
        "--steps",
        str(args.steps),
        "--guidance",
        str(args.guidance),
        "--seconds",
        "5",
    ]
    split = None if args.no_pin else split_cpus("auto", allowed_cpus())
    pinning = ["--cpus", ",".join(map(str, split.pipeline))] if split else []
    log("the limit: pipeline calls in process, as the service runs them")
    limit = run_json(
        "bench.limit", *shape, "--batches", "1", str(args.max_batch), "--service-threads", *pinning
    )
    if limit["device"] != "cpu":
        split = None  # a GPU pipeline needs no cores of its own
    log("the same pipeline alone on every core")
    all_cores = run_json("bench.limit", *shape, "--batches", str(args.max_batch))
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "model": str(model),
        "params": body,
        "max_batch_size": args.max_batch,
        "limit": limit,
        "limit_all_cores": all_cores,
        "pipeline_cpus": list(split.pipeline) if split else None,
        "cold_start": cold_start(model, work),
    }
    # Every embedded run measures the same shape against the same limit; only the service's
    # batch size and fair dispatch change.
    run_embedded = functools.partial(
        embedded,
        model,
        work,
        body=body,
        seconds=args.seconds,
        limit=limit,
        max_batch=args.max_batch,
        split=split,
        all_cores=all_cores,
    )
    embedded_batched = run_embedded(batch_size=args.max_batch)
    embedded_unbatched = run_embedded(batch_size=1)
    # The fair dispatcher's own cost: the same service with it off (DISPATCH_CAPACITY=0),
    # runs alternating on the same machine (one pair of runs differs by more than the cost).
    runs: dict[bool, list[dict[str, Any]]] = {True: [embedded_batched], False: []}
    for fair in (False, True, False):
        runs[fair].append(
            run_embedded(batch_size=args.max_batch, fair_dispatch=fair, measure_submits=False)
        )
    report["fair_dispatch_cost"] = dispatch_cost(runs[True], runs[False])
    log("the line's own cost per job (memory and Redis)")
    report["fair_dispatch_cost"]["line_per_job"] = run_json("bench.dispatch", "--jobs", "1000")
    log("the serving process's CPU per request: floor, read, list (embedded profile)")
    report["request_cost"] = run_json("bench.request_cost", "--model", str(model))
    log("one client, both flows (one round trip, three calls): added latency, CPU per job")
    report["flows"] = run_json("bench.flows", "--model", str(model))
    log("serving: submits with 32 in flight, and request cost against a store of 100,000 jobs")
    report["serving"] = run_json("bench.serving", "--model", str(model))
    report["api_submit"] = embedded_batched.pop("submit")
    report["embedded"] = {
        **embedded_batched,
        "unbatched_clients_16": embedded_unbatched["clients_16"],
        "batching_speedup_clients_16": round(
            embedded_batched["clients_16"]["images_per_s"]
            / max(embedded_unbatched["clients_16"]["images_per_s"], 1e-9),
            2,
        ),
    }
    if args.skip_emulator:
        report["emulator"] = {"skipped": "--skip-emulator"}
    else:
        try:
            report["emulator"] = emulator_stack(
                model,
                work,
                body=body,
                seconds=args.seconds,
                limit=limit,
                max_batch=args.max_batch,
            )
        except ServiceUnavailable as exc:
            report["emulator"] = {"skipped": str(exc)}
    report["duration_s"] = round(time.perf_counter() - started, 1)
    document = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document + "\n")
    print(document)  # noqa: T201 - the output is the point
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
