"""`txt2img`: the user's command line for the API, plus the operator commands under `admin`.

    txt2img submit "a lighthouse at dawn" --seed 7 --wait --out images/
    txt2img status JOB_ID [--json]
    txt2img list [--limit N] [--cursor C] [--json]
    txt2img cancel JOB_ID
    txt2img download JOB_ID [--out DIR]
    txt2img admin keys create --owner alice      # same as `txt2img-admin ...`

The API URL and key come from `--url`/`--key` or TXT2IMG_URL/TXT2IMG_API_KEY. Exit status:
0 ok, 1 the job failed or was canceled, 2 the API refused the request (4xx) or bad usage,
3 the API failed (5xx) or could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
WAIT_S = 2
_GLOBAL_OPTIONS = ("--url", "--key")


class CliError(Exception):
    """An error to report as `error: <message>` with an exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _check(response: httpx.Response) -> Any:
    """The JSON body of a successful answer; a problem+json answer becomes a CliError."""
    if response.status_code < 400:
        return response.json() if response.content else None
    code, detail = "error", response.reason_phrase
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict):
        code = str(problem.get("code") or code)
        detail = str(problem.get("detail") or problem.get("title") or detail)
    exit_code = 2 if response.status_code < 500 else 3
    raise CliError(f"{response.status_code} {code}: {detail}", exit_code)


class Api:
    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=httpx.Timeout(30.0, connect=10.0),
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}", 3) from exc
        return _check(response)

    def job(self, job_id: str, wait_s: int | None = None) -> dict[str, Any]:
        headers = {"Prefer": f"wait={wait_s}"} if wait_s else {}
        job: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}", headers=headers)
        return job

    def download(self, job: dict[str, Any], out_dir: Path) -> list[Path]:
        """Fetch the job's images through their signed URLs (no API key sent with them)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0)) as plain:
            for index, image in enumerate(job.get("images") or []):
                try:
                    response = plain.get(str(image["url"]))
                except httpx.TransportError as exc:
                    raise CliError(f"cannot download image {index}: {exc}", 3) from exc
                _check_blob(response)
                path = out_dir / f"{job['id']}-{index}.png"
                path.write_bytes(response.content)
                paths.append(path)
        return paths


def _check_blob(response: httpx.Response) -> None:
    if response.status_code >= 400:
        _check(response)


class Progress:
    """A one-line bar redrawn with \\r on a terminal; percentage lines when stderr is not one."""

    WIDTH = 30

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int] | None = None

    def show(self, status: str, progress: float) -> None:
        percent = max(0, min(100, int(progress * 100)))
        if (status, percent) == self.last:
            return
        self.last = (status, percent)
        if self.tty:
            filled = percent * self.WIDTH // 100
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            sys.stderr.write(f"\r[{bar}] {percent:3d}% {status:<10}")
        else:
            sys.stderr.write(f"{status} {percent}%\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.last is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _wait(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    progress = Progress()
    try:
        while True:
            progress.show(str(job["status"]), float(job.get("progress") or 0.0))
            if job["status"] in TERMINAL:
                return job
            job = api.job(str(job["id"]), wait_s=WAIT_S)
    finally:
        progress.done()


def _finish(api: Api, job: dict[str, Any], out_dir: Path) -> int:
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        code = error.get("code") or job["status"]
        message = error.get("message") or f"the job was {job['status']}"
        _err(f"error: job {job['id']} {job['status']}: {code}: {message}")
        return 1
    for path in api.download(job, out_dir):
        _out(str(path))
    return 0


def _cmd_submit(api: Api, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"prompt": args.prompt}
    for field, value in (
        ("negative_prompt", args.negative_prompt),
        ("width", args.width),
        ("height", args.height),
        ("num_inference_steps", args.steps),
        ("guidance_scale", args.guidance),
        ("seed", args.seed),
        ("num_images", args.images),
    ):
        if value is not None:
            body[field] = value
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    job: dict[str, Any] = api.request("POST", "/v1/jobs", json=body, headers=headers)
    _out(str(job["id"]))
    sys.stdout.flush()
    if not args.wait:
        return 0
    try:
        job = _wait(api, job)
    except KeyboardInterrupt:
        _err(f"interrupted; the job goes on: txt2img status {job['id']}")
        return 130
    return _finish(api, job, Path(args.out))


def _cmd_status(api: Api, args: argparse.Namespace) -> int:
    job = api.job(args.job_id)
    if args.json:
        _out(json.dumps(job, indent=2))
        return 0
    params = job.get("params") or {}
    _out(f"id:         {job['id']}")
    _out(f"status:     {job['status']}")
    _out(f"progress:   {float(job.get('progress') or 0.0):.0%}")
    _out(f"created_at: {job.get('created_at')}")
    if job.get("finished_at"):
        _out(f"finished:   {job['finished_at']}")
    _out(f"prompt:     {params.get('prompt', '')}")
    _out(
        f"params:     {params.get('width')}x{params.get('height')}, "
        f"steps {params.get('num_inference_steps')}, guidance {params.get('guidance_scale')}, "
        f"seed {params.get('seed')}, images {params.get('num_images')}"
    )
    if job.get("error"):
        _out(f"error:      {job['error'].get('code')}: {job['error'].get('message')}")
    for index, image in enumerate(job.get("images") or []):
        _out(f"image {index}:    {image['url']}")
    return 0


def _truncate(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _cmd_list(api: Api, args: argparse.Namespace) -> int:
    params: dict[str, str | int] = {}
    if args.limit is not None:
        params["limit"] = args.limit
    if args.cursor:
        params["cursor"] = args.cursor
    page: dict[str, Any] = api.request("GET", "/v1/jobs", params=params)
    if args.json:
        _out(json.dumps(page, indent=2))
        return 0
    rows = [("ID", "STATUS", "PROGRESS", "CREATED_AT", "PROMPT")]
    for job in page.get("items") or []:
        rows.append(
            (
                str(job["id"]),
                str(job["status"]),
                f"{float(job.get('progress') or 0.0):.0%}",
                str(job.get("created_at", "")),
                _truncate(str((job.get("params") or {}).get("prompt", "")), 40),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        _out("  ".join([*cells, row[4]]).rstrip())
    if page.get("next_cursor"):
        _err(f"more: txt2img list --cursor {page['next_cursor']}")
    return 0


def _cmd_cancel(api: Api, args: argparse.Namespace) -> int:
    job: dict[str, Any] = api.request("DELETE", f"/v1/jobs/{args.job_id}")
    _out(f"{job['id']} {job['status']}")
    return 0


def _cmd_download(api: Api, args: argparse.Namespace) -> int:
    job = api.job(args.job_id)
    if job["status"] != "succeeded":
        if job["status"] in TERMINAL:
            return _finish(api, job, Path(args.out))
        _err(f"error: job {job['id']} is {job['status']}; no images yet")
        return 1
    return _finish(api, job, Path(args.out))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="txt2img",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("TXT2IMG_URL") or DEFAULT_URL,
        help=f"API base URL (env TXT2IMG_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("TXT2IMG_API_KEY"),
        help="API key (env TXT2IMG_API_KEY); prefer the env var to keep it out of `ps`",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="submit a job and print its id")
    submit.add_argument("prompt")
    submit.add_argument("--negative-prompt")
    submit.add_argument("--width", type=int)
    submit.add_argument("--height", type=int)
    submit.add_argument("--steps", type=int, help="num_inference_steps")
    submit.add_argument("--guidance", type=float, help="guidance_scale")
    submit.add_argument("--seed", type=int)
    submit.add_argument("--images", type=int, metavar="N", help="num_images (1-4)")
    submit.add_argument("--idempotency-key", help="makes retrying the submit safe")
    submit.add_argument(
        "--wait", action="store_true", help="show progress until done, then download"
    )
    submit.add_argument("--out", default=".", metavar="DIR", help="where --wait saves images")

    status = commands.add_parser("status", help="show a job")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="the API's JSON as is")

    listing = commands.add_parser("list", help="your jobs, newest first")
    listing.add_argument("--limit", type=int)
    listing.add_argument("--cursor", help="next_cursor of the previous page")
    listing.add_argument("--json", action="store_true", help="the API's JSON as is")

    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id")

    download = commands.add_parser("download", help="save a finished job's images")
    download.add_argument("job_id")
    download.add_argument("--out", default=".", metavar="DIR")

    commands.add_parser(
        "admin",
        help="operator commands (keys, dead-letters, outbox, webhooks); same as txt2img-admin",
        add_help=False,
    )
    return parser


def _admin_argv(argv: Sequence[str]) -> list[str] | None:
    """The arguments after `admin`, when that is the command; global options may precede it."""
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in _GLOBAL_OPTIONS:
            index += 2
        elif arg.startswith(tuple(f"{option}=" for option in _GLOBAL_OPTIONS)):
            index += 1
        elif arg == "admin":
            return list(argv[index + 1 :])
        else:
            return None
    return None


def _run_admin(argv: list[str]) -> int:
    # The admin commands open the server's stores; the client's own commands never import them.
    from api import admin_cli

    try:
        return admin_cli.main(argv)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        _err(f"error: {exc.code}")
        return 1


_COMMANDS = {
    "submit": _cmd_submit,
    "status": _cmd_status,
    "list": _cmd_list,
    "cancel": _cmd_cancel,
    "download": _cmd_download,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    admin = _admin_argv(argv)
    if admin is not None:
        return _run_admin(admin)
    args = _parser().parse_args(argv)
    if not args.key:
        _err("error: no API key: pass --key or set TXT2IMG_API_KEY")
        return 2
    try:
        with Api(args.url, args.key) as api:
            return _COMMANDS[args.command](api, args)
    except CliError as exc:
        _err(f"error: {exc.message}")
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
