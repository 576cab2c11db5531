"""What each client method sends and how its answer is read, without doing any I/O: the sync
and the async client share all of it and differ only in how they send and sleep."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from ._errors import UnexpectedResponse
from ._models import Job, JobEvent, JobPage, ProgressEvent, QueueEvent, StatusEvent
from ._retry import RetryPolicy
from ._sse import ServerSentEvent, SSEDecoder
from ._version import __version__

DEFAULT_HOLD_S = 20.0  # `Prefer: wait` of each read in wait(); the service caps it (30 s)
MIN_POLL_S = 1.0  # between reads of wait() where the service did not hold them
EVENT_STREAM = "text/event-stream"
# The service sends a keep-alive comment every 15 s; a stream silent for longer is dropped.
STREAM_READ_TIMEOUT_S = 45.0
USER_AGENT = f"txt2img-client/{__version__} httpx/{httpx.__version__}"


@dataclass(frozen=True, slots=True)
class Call:
    """One request to the API, relative to its base URL."""

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Mapping[str, Any] | None = None
    # A held request (`Prefer: wait`) may take this much longer than the read timeout.
    extra_read_s: float = 0.0
    # A stream's reads wait at least this long for the next bytes.
    min_read_s: float = 0.0


def _job_path(job_id: str) -> str:
    # Quoted whole, so an id cannot reach another path ("../webhooks/secret"); "." and ".."
    # would still be resolved as dot segments.
    if job_id in ("", ".", ".."):
        raise ValueError(f"not a job id: {job_id!r}")
    return f"/v1/jobs/{quote(job_id, safe='')}"


def _prefer_wait(seconds: float) -> dict[str, str]:
    # Whole seconds when it is whole ("wait=20"), else milliseconds at most ("wait=2.5").
    shown = f"{seconds:.0f}" if seconds == int(seconds) else f"{math.ceil(seconds * 1000) / 1000}"
    return {"Prefer": f"wait={shown}"}


def timeout_of(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """A number is every timeout but connecting, which gives up after 10 s at most."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(10.0, timeout))


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def submit(body: Mapping[str, Any], *, idempotency_key: str, wait: float | None = None) -> Call:
    headers = {"Idempotency-Key": idempotency_key}
    if wait is not None:
        headers.update(_prefer_wait(wait))
    return Call("POST", "/v1/jobs", headers=headers, json=body, extra_read_s=wait or 0.0)


def job_body(prompt: str, **optional: Any) -> dict[str, Any]:
    """The body of a submit: the prompt and whichever parameters were given."""
    return {"prompt": prompt, **{k: v for k, v in optional.items() if v is not None}}


def get(job_id: str, *, wait: float | None = None) -> Call:
    headers = {} if wait is None else _prefer_wait(wait)
    return Call("GET", _job_path(job_id), headers=headers, extra_read_s=wait or 0.0)


def list_page(*, limit: int | None, cursor: str | None) -> Call:
    params: dict[str, str | int] = {}
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/jobs", params=params)


def cancel(job_id: str) -> Call:
    return Call("DELETE", _job_path(job_id))


def events(job_id: str, *, last_event_id: str) -> Call:
    headers = {"Accept": EVENT_STREAM, "Cache-Control": "no-cache"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return Call(
        "GET", f"{_job_path(job_id)}/events", headers=headers, min_read_s=STREAM_READ_TIMEOUT_S
    )


@dataclass(frozen=True)
class Settings:
    """What both clients are built from."""

    base_url: str
    api_key: str = field(repr=False)
    timeout: httpx.Timeout
    retry: RetryPolicy

    def default_headers(self) -> dict[str, str]:
        # The key is added to each API request, never to the client: image URLs may point at
        # another host (Cloud Storage), and they are credentials of their own.
        return {"Accept": "application/json", "User-Agent": USER_AGENT}

    def build(self, http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        headers = {"Authorization": f"Bearer {self.api_key}", **call.headers}
        return http.build_request(
            call.method,
            call.path,
            params=call.params,
            headers=headers,
            json=call.json,
            timeout=self._timeout(call),
        )

    def _timeout(self, call: Call) -> httpx.Timeout:
        read = self.timeout.read
        if read is not None:
            read = max(read + call.extra_read_s, call.min_read_s)
        return httpx.Timeout(
            connect=self.timeout.connect,
            read=read,
            write=self.timeout.write,
            pool=self.timeout.pool,
        )


def origin(url: httpx.URL) -> str:
    """Where a request went, without its path and query (a signed URL's query is a credential)."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def _json(response: httpx.Response) -> Mapping[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise UnexpectedResponse(
            f"{response.status_code} from {response.request.url.path}: not JSON"
        ) from exc
    if not isinstance(body, dict):
        raise UnexpectedResponse(f"{response.status_code}: expected a JSON object")
    return body


def read_job(response: httpx.Response) -> Job:
    body = _json(response)
    try:
        return Job.from_dict(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnexpectedResponse(f"not a job: {type(exc).__name__}: {exc}") from exc


def read_page(response: httpx.Response) -> JobPage:
    body = _json(response)
    try:
        return JobPage.from_dict(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnexpectedResponse(f"not a page of jobs: {type(exc).__name__}: {exc}") from exc


def read_event(sse: ServerSentEvent, *, queue: bool = False) -> JobEvent | QueueEvent | None:
    """A job event from a server-sent one; None for an event of a type this client does not
    know (a newer service may send more), and for `queue` events unless asked for."""
    if sse.event not in (("progress", "status", "queue") if queue else ("progress", "status")):
        return None
    try:
        data = json.loads(sse.data)
        if sse.event == "progress":
            return ProgressEvent.from_dict(data, event_id=sse.id)
        if sse.event == "queue":
            return QueueEvent.from_dict(data, event_id=sse.id)
        return StatusEvent(event_id=sse.id, job=Job.from_dict(data))
    except (KeyError, TypeError, ValueError) as exc:
        raise UnexpectedResponse(f"bad {sse.event} event: {type(exc).__name__}: {exc}") from exc


def check_stream(response: httpx.Response) -> None:
    content_type = response.headers.get("Content-Type", "")
    if not content_type.startswith(EVENT_STREAM):
        raise UnexpectedResponse(f"expected {EVENT_STREAM}, got {content_type or 'no type'}")


def reconnect_delay(decoder: SSEDecoder, policy: RetryPolicy, drops: int) -> float:
    """Before opening a job's stream again: the stream's own `retry:` when it sent one (the
    service does), else the policy's backoff."""
    if decoder.retry_ms is not None:
        return decoder.retry_ms / 1000
    return policy.backoff(max(drops, 1))
