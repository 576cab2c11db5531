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
from datetime import UTC, datetime
from pathlib import Path

from txt2img_client import ApiError, Client, Job, JobStatus, Txt2ImgError

DEFAULT_URL = "http://127.0.0.1:8080"
# Each read of `submit --wait` is held this long at most, so the bar moves every 2 s.
WAIT_S = 2
_GLOBAL_OPTIONS = ("--url", "--key")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _timestamp(value: datetime | None) -> str:
    """As the API writes it: ISO 8601, UTC as `Z`."""
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st, ..."""
    suffix = (
        "th" if 11 <= number % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    )
    return f"{number}{suffix}"


def place_in_line(job: Job, now: datetime | None = None) -> str:
    """A queued job's place in line for the GPUs, `3rd in line, about 12 s` (two jobs go
    before it; 12 s until its estimated start) or `next in line`; "" when the job is not queued
    or the service does not tell. Both are the API's estimates."""
    position = job.queue_position
    if job.status is not JobStatus.QUEUED or position is None:
        return ""
    text = "next in line" if position == 0 else f"{ordinal(position + 1)} in line"
    start = job.estimated_start_at
    if start is not None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        seconds = (start - (now or datetime.now(UTC))).total_seconds()
        text += f", about {max(0, round(seconds))} s"
    return text


def status_text(job: Job, now: datetime | None = None) -> str:
    """`queued: 3rd in line, about 12 s` while the job waits its turn, else its status."""
    place = place_in_line(job, now)
    return f"{job.status}: {place}" if place else str(job.status)


class Progress:
    """A one-line bar redrawn with \\r on a terminal; percentage lines when stderr is not one
    (a queued job's place in line instead of its 0%)."""

    WIDTH = 30

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int, str | int | None] | None = None
        self.drawn = 0  # the width of the line on the terminal, to blank what a shorter leaves

    def show(self, job: Job) -> None:
        percent = max(0, min(100, int(job.progress * 100)))
        status = status_text(job)
        # A log gets a new line when the position moves, not each time the estimate does.
        key = (job.status, percent, status if self.tty else job.queue_position)
        if key == self.last:
            return
        self.last = key
        if self.tty:
            filled = percent * self.WIDTH // 100
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            line = f"[{bar}] {percent:3d}% {status:<10}"
            sys.stderr.write(f"\r{line.ljust(self.drawn)}")
            self.drawn = len(line)
        elif job.status is JobStatus.QUEUED and job.queue_position is not None:
            sys.stderr.write(f"{status}\n")
        else:
            sys.stderr.write(f"{job.status} {percent}%\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.last is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _wait(client: Client, job: Job) -> Job:
    progress = Progress()
    try:
        return client.wait(job, hold=WAIT_S, on_update=progress.show)
    finally:
        progress.done()


def _finish(client: Client, job: Job, out_dir: Path) -> int:
    """Exit 0 with the images saved if the job succeeded, else 1 saying why it did not."""
    if job.status is not JobStatus.SUCCEEDED:
        code = job.error.code if job.error else job.status
        message = job.error.message if job.error else f"the job was {job.status}"
        _err(f"error: job {job.id} {job.status}: {code}: {message}")
        return 1
    # Signed URLs: the SDK sends no API key with them.
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(job.images):
        _out(str(client.download(image, out_dir / f"{job.id}-{index}.png")))
    return 0


def _cmd_submit(client: Client, args: argparse.Namespace) -> int:
    job = client.submit(
        args.prompt,
        negative_prompt=args.negative_prompt,
        width=args.width,
        height=args.height,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        num_images=args.images,
        # None: the SDK makes one, so its own retries of this submit stay one job.
        idempotency_key=args.idempotency_key,
    )
    _out(job.id)
    sys.stdout.flush()
    if not args.wait:
        return 0
    try:
        job = _wait(client, job)
    except KeyboardInterrupt:
        _err(f"interrupted; the job goes on: txt2img status {job.id}")
        return 130
    return _finish(client, job, Path(args.out))


def _cmd_status(client: Client, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    if args.json:
        _out(json.dumps(job.raw, indent=2))
        return 0
    params = job.params
    _out(f"id:         {job.id}")
    _out(f"status:     {status_text(job)}")
    _out(f"progress:   {job.progress:.0%}")
    _out(f"created_at: {_timestamp(job.created_at)}")
    if job.finished_at:
        _out(f"finished:   {_timestamp(job.finished_at)}")
    _out(f"prompt:     {params.prompt}")
    _out(
        f"params:     {params.width}x{params.height}, "
        f"steps {params.num_inference_steps}, guidance {params.guidance_scale}, "
        f"seed {params.seed}, images {params.num_images}"
    )
    if job.error:
        _out(f"error:      {job.error.code}: {job.error.message}")
    for index, image in enumerate(job.images):
        _out(f"image {index}:    {image.url}")
    return 0


def _truncate(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _cmd_list(client: Client, args: argparse.Namespace) -> int:
    page = client.list_page(limit=args.limit, cursor=args.cursor or None)
    if args.json:
        _out(json.dumps(page.raw, indent=2))
        return 0
    rows = [("ID", "STATUS", "PROGRESS", "CREATED_AT", "PROMPT")]
    for job in page.items:
        rows.append(
            (
                job.id,
                job.status,
                f"{job.progress:.0%}",
                _timestamp(job.created_at),
                _truncate(job.params.prompt, 40),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        _out("  ".join([*cells, row[4]]).rstrip())
    if page.next_cursor:
        _err(f"more: txt2img list --cursor {page.next_cursor}")
    return 0


def _cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.job_id)
    _out(f"{job.id} {job.status}")
    return 0


def _cmd_download(client: Client, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    if not job.is_terminal:
        _err(f"error: job {job.id} is {job.status}; no images yet")
        return 1
    return _finish(client, job, Path(args.out))


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
        with Client(args.url, args.key) as client:
            return _COMMANDS[args.command](client, args)
    except ApiError as exc:  # "<status> <code>: <detail>"
        _err(f"error: {exc}")
        return 2 if exc.status < 500 else 3
    except Txt2ImgError as exc:  # unreachable, or an answer the API does not document
        _err(f"error: {exc}")
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
