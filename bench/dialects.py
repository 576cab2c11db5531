"""What a compatible call costs over the native API for the same job, on the embedded profile:
one client, the flows interleaved round by round so that the pipeline's own time (the same job
shape every time) cancels out of the medians.

    native        POST /v1/jobs with `Prefer: wait=60` (the job view, signed URLs)
    native+png    the same, then GET of the image (what a caller of the A1111 dialect gets)
    openai        POST /v1/images/generations (response_format url)
    a1111         POST /sdapi/v1/txt2img (base64 PNGs in the answer)

Prints one JSON document: p50/p95 latency per flow, and the added latency of each dialect over
its native counterpart (openai - native, a1111 - native+png) at p50.

    python -m bench.dialects [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import KEY, REPO, log, service_env, start_api
from bench.stats import ms, percentile
from emulators.process import free_port, stop_service
from emulators.stack import ensure_tiny_model

SHAPE = {"width": 64, "height": 64, "steps": 2, "guidance": 1.0}


def expect(condition: bool, context: object) -> None:
    if not condition:
        raise RuntimeError(f"unexpected answer: {context}")


def flows(client: httpx.Client, model: str) -> dict[str, Callable[[int], None]]:
    auth = {"Authorization": f"Bearer {KEY}"}
    native_body = {
        "prompt": "a lighthouse on a cliff at dawn",
        "width": SHAPE["width"],
        "height": SHAPE["height"],
        "num_inference_steps": SHAPE["steps"],
        "guidance_scale": SHAPE["guidance"],
    }

    def native(seed: int, *, download: bool = False) -> None:
        answer = client.post(
            "/v1/jobs", json={**native_body, "seed": seed}, headers={**auth, "Prefer": "wait=60"}
        )
        answer.raise_for_status()
        job = answer.json()
        expect(job["status"] == "succeeded", job)
        if download:
            client.get(job["images"][0]["url"]).raise_for_status()

    def openai(seed: int) -> None:
        # The OpenAI dialect has no seed or steps: the served defaults apply, so the native
        # counterpart is measured with the same prompt at the defaults' cost below.
        answer = client.post(
            "/v1/images/generations",
            json={
                "prompt": f"a lighthouse on a cliff at dawn {seed}",
                "model": model,
                "size": f"{SHAPE['width']}x{SHAPE['height']}",
            },
            headers=auth,
        )
        answer.raise_for_status()

    def native_defaults(seed: int) -> None:
        answer = client.post(
            "/v1/jobs",
            json={
                "prompt": f"a lighthouse on a cliff at dawn {seed}",
                "width": SHAPE["width"],
                "height": SHAPE["height"],
            },
            headers={**auth, "Prefer": "wait=60"},
        )
        answer.raise_for_status()
        expect(answer.json()["status"] == "succeeded", answer.text)

    def a1111(seed: int) -> None:
        answer = client.post(
            "/sdapi/v1/txt2img",
            json={
                "prompt": "a lighthouse on a cliff at dawn",
                "width": SHAPE["width"],
                "height": SHAPE["height"],
                "steps": SHAPE["steps"],
                "cfg_scale": SHAPE["guidance"],
                "seed": seed,
            },
            headers=auth,
        )
        answer.raise_for_status()
        expect(bool(answer.json()["images"]), answer.text)

    return {
        "native": native,
        "native+png": lambda seed: native(seed, download=True),
        "native_defaults": native_defaults,
        "openai": openai,
        "a1111": a1111,
    }


def measure(url: str, rounds: int, model: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=120) as client:
        calls = flows(client, model)
        for name, call in calls.items():  # warm every path once
            log(f"warming {name}")
            call(1)
        latencies: dict[str, list[float]] = {name: [] for name in calls}
        for round_ in range(rounds):
            for name, call in calls.items():
                began = time.perf_counter()
                call(1000 + round_)
                latencies[name].append(time.perf_counter() - began)
    report: dict[str, Any] = {
        name: {"p50_ms": ms(percentile(values, 50)), "p95_ms": ms(percentile(values, 95))}
        for name, values in latencies.items()
    }

    def added(dialect: str, native: str) -> float | None:
        pairs = [a - b for a, b in zip(latencies[dialect], latencies[native], strict=True)]
        return ms(percentile(pairs, 50))

    report["added_p50_ms"] = {
        "openai_over_native_same_defaults": added("openai", "native_defaults"),
        "a1111_over_native_and_download": added("a1111", "native+png"),
    }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dialects", description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="txt2img-bench-dialects-"))
    model = ensure_tiny_model(REPO / ".data" / "bench" / "tiny-sd")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = service_env(
        work / "data",
        model,
        APP_ENV="local",
        PORT=str(port),
        MAX_BATCH_SIZE="1",
        DEFAULT_STEPS=str(SHAPE["steps"]),
        DEFAULT_GUIDANCE_SCALE=str(SHAPE["guidance"]),
    )
    log("starting the embedded service")
    service = start_api("bench-dialects-api", port, env, work / "logs")
    try:
        served = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        model_id = served.json()["data"][0]["id"]
        report = {"shape": SHAPE, "rounds": args.rounds, **measure(url, args.rounds, model_id)}
    finally:
        stop_service(service)
    print(json.dumps(report, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
