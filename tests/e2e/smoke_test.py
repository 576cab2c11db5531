"""Smoke test of a deployed API: submit one small job, wait for it, download its images.

    python tests/e2e/smoke_test.py --api-url https://API --api-key KEY [--timeout 900]

Needs only the standard library and httpx. Exit status 0 when the job succeeded and every
image is a PNG, 1 otherwise; the last line printed is a one-line summary either way. Cloud
Build runs it against staging after each deploy (cloudbuild.yaml, step `smoke-staging`).

Not a pytest module: pytest would collect the file by its name (`*_test.py`), so
`__test__ = False` tells it there is nothing to run here.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

__test__ = False

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
# 503 (a dependency is starting) and 429 (rate limited) are worth another try.
RETRYABLE = frozenset({429, 502, 503, 504})


class SmokeFailed(Exception):
    """The deployment did not do what the smoke test asked of it."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="smoke_test.py", description="Submit a small job, poll it, download its images."
    )
    parser.add_argument("--api-url", required=True, help="the API's base URL, e.g. https://...")
    parser.add_argument("--api-key", required=True, help="a key for the API (Bearer token)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds to wait for the job, cold GPU start included (default 900)",
    )
    parser.add_argument("--poll-interval", type=float, default=3.0, help="seconds between polls")
    parser.add_argument("--steps", type=int, default=4, help="num_inference_steps (default 4)")
    parser.add_argument("--size", type=int, default=None, help="width and height (model default)")
    return parser.parse_args(argv)


def request_with_retries(
    client: httpx.Client, method: str, url: str, *, deadline: float, **kwargs: Any
) -> httpx.Response:
    """`method url`, retried on 429/5xx answers and connection errors until `deadline`."""
    while True:
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            if time.monotonic() >= deadline:
                raise SmokeFailed(f"{method} {url}: {exc}") from exc
            time.sleep(2.0)
            continue
        if response.status_code not in RETRYABLE or time.monotonic() >= deadline:
            return response
        retry_after = response.headers.get("retry-after", "")
        time.sleep(min(float(retry_after), 30.0) if retry_after.isdigit() else 2.0)


def submit(client: httpx.Client, api_url: str, args: argparse.Namespace, deadline: float) -> str:
    body: dict[str, Any] = {
        # A fresh prompt each run: a seeded request identical to an earlier one would be
        # answered from the cache without a GPU run.
        "prompt": f"a lighthouse at dawn, smoke test {secrets.token_hex(4)}",
        "num_inference_steps": args.steps,
        "num_images": 1,
    }
    if args.size is not None:
        body["width"] = body["height"] = args.size
    response = request_with_retries(
        client, "POST", urljoin(api_url, "/v1/jobs"), deadline=deadline, json=body
    )
    if response.status_code not in (200, 202):
        raise SmokeFailed(f"POST /v1/jobs answered {response.status_code}: {response.text[:500]}")
    return str(response.json()["id"])


def wait_for(
    client: httpx.Client, api_url: str, job_id: str, *, deadline: float, interval: float
) -> dict[str, Any]:
    url = urljoin(api_url, f"/v1/jobs/{job_id}")
    while True:
        response = request_with_retries(client, "GET", url, deadline=deadline)
        if response.status_code != 200:
            raise SmokeFailed(f"GET /v1/jobs/{job_id} answered {response.status_code}")
        job: dict[str, Any] = response.json()
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() >= deadline:
            raise SmokeFailed(f"job {job_id} still {job['status']} when the time ran out")
        time.sleep(interval)


def download_pngs(api_url: str, job: dict[str, Any], *, deadline: float) -> list[int]:
    """Fetch every image URL (without the API key: the signed URL is the credential) and
    return their sizes in bytes."""
    if not job["images"]:
        raise SmokeFailed(f"job {job['id']} succeeded without images")
    sizes = []
    with httpx.Client(timeout=60.0, follow_redirects=True) as anonymous:
        for image in job["images"]:
            url = urljoin(api_url, image["url"])
            response = request_with_retries(anonymous, "GET", url, deadline=deadline)
            if response.status_code != 200:
                host = urlsplit(url).netloc
                raise SmokeFailed(f"image download from {host} answered {response.status_code}")
            if not response.content.startswith(PNG_SIGNATURE):
                raise SmokeFailed(f"image of job {job['id']} is not a PNG")
            sizes.append(len(response.content))
    return sizes


def run(args: argparse.Namespace) -> str:
    """The whole check; returns the summary line, raises SmokeFailed."""
    api_url = args.api_url.rstrip("/") + "/"
    started = time.monotonic()
    deadline = started + args.timeout
    headers = {"Authorization": f"Bearer {args.api_key}"}
    with httpx.Client(headers=headers, timeout=30.0) as client:
        job_id = submit(client, api_url, args, deadline)
        job = wait_for(client, api_url, job_id, deadline=deadline, interval=args.poll_interval)
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        raise SmokeFailed(
            f"job {job_id} {job['status']}: {error.get('code', '?')} {error.get('message', '')}"
        )
    sizes = download_pngs(api_url, job, deadline=deadline)
    image = job["images"][0]
    return (
        f"smoke test passed: job {job_id} succeeded in {time.monotonic() - started:.1f} s "
        f"(model {job['model']}, attempts {job['attempts']}), {len(sizes)} PNG image(s) "
        f"{image['width']}x{image['height']}, {sum(sizes)} bytes"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except (SmokeFailed, httpx.HTTPError, KeyError, ValueError) as exc:
        sys.stdout.write(f"smoke test FAILED against {args.api_url}: {exc}\n")
        return 1
    sys.stdout.write(summary + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
