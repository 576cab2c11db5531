"""The synchronous client."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal, overload

import httpx

from . import _calls as calls
from ._errors import Conflict, ServiceUnreachable, WaitTimeout, error_from_response
from ._models import Image, Job, JobEvent, JobPage, JobStatus, QueueEvent, StatusEvent
from ._retry import RETRYABLE_TRANSPORT_ERRORS, RetryPolicy, is_retry_safe
from ._sse import SSEDecoder


class Client:
    """The txt2img API, synchronously.

        with Client("https://txt2img.example.com", api_key) as client:
            job = client.wait(client.submit("a lighthouse at dawn", seed=7))
            client.download(job.images[0], "lighthouse.png")

    Requests that fail with no answer, 429 or 503 are sent again as `retry` says (a submit is
    made safe to resend by its `Idempotency-Key`); errors are raised as `Txt2ImgError`s.
    `transport` replaces httpx's (e.g. `httpx.MockTransport` in tests).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._settings = calls.Settings(
            base_url=base_url.rstrip("/"),
            api_key=api_key,
            timeout=calls.timeout_of(timeout),
            retry=retry or RetryPolicy(),
        )
        self._http = httpx.Client(
            base_url=self._settings.base_url,
            headers=self._settings.default_headers(),
            timeout=self._settings.timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        num_images: int | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Job:
        """Submit a job (`POST /v1/jobs`); the same `idempotency_key` (one is made when none is
        given) is sent on every retry. `wait`: let the service hold the answer up to that many
        seconds for the job to end."""
        body = calls.job_body(
            prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            seed=seed,
            num_images=num_images,
            webhook_url=webhook_url,
        )
        key = idempotency_key or calls.new_idempotency_key()
        return calls.read_job(self._send(calls.submit(body, idempotency_key=key, wait=wait)))

    def get(self, job_id: str, *, wait: float | None = None) -> Job:
        """The job now, or (`wait`) once it ends, or after that many seconds at most."""
        return calls.read_job(self._send(calls.get(job_id, wait=wait)))

    def list_page(self, *, limit: int | None = None, cursor: str | None = None) -> JobPage:
        """One page of your jobs, newest first; pass its `next_cursor` as `cursor` for the next."""
        return calls.read_page(self._send(calls.list_page(limit=limit, cursor=cursor)))

    def list(self, *, limit: int | None = None, cursor: str | None = None) -> Iterator[Job]:
        """Every job of yours, newest first, reading `limit` a page as it goes."""
        while True:
            page = self.list_page(limit=limit, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; `Conflict` (`job-finished`) once it has ended."""
        attempts: builtins.list[int] = []
        try:
            return calls.read_job(self._send(calls.cancel(job_id), attempts=attempts))
        except Conflict:
            # An attempt whose answer was lost may have canceled it: then that is the answer.
            if len(attempts) > 1 and (job := self.get(job_id)).status is JobStatus.CANCELED:
                return job
            raise

    def wait(
        self,
        job: Job | str,
        *,
        timeout: float | None = None,
        hold: float = calls.DEFAULT_HOLD_S,
        on_update: Callable[[Job], object] | None = None,
    ) -> Job:
        """The job once it has ended, read with `Prefer: wait=<hold>` so the service answers
        as soon as it does. `on_update` sees every state read, the first one included.
        Raises `WaitTimeout` after `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = job if isinstance(job, Job) else self.get(job)
        while True:
            if on_update is not None:
                on_update(current)
            if current.is_terminal:
                return current
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(current, timeout or 0.0)
            held = hold if remaining is None else min(hold, remaining)
            response = self._send(calls.get(current.id, wait=held))
            current = calls.read_job(response)
            if "Preference-Applied" not in response.headers and not current.is_terminal:
                time.sleep(min(calls.MIN_POLL_S, held))

    @overload
    def events(
        self, job_id: str, *, last_event_id: str = "", queue: Literal[False] = False
    ) -> Iterator[JobEvent]: ...
    @overload
    def events(
        self, job_id: str, *, last_event_id: str = "", queue: bool
    ) -> Iterator[JobEvent | QueueEvent]: ...
    def events(
        self, job_id: str, *, last_event_id: str = "", queue: bool = False
    ) -> Iterator[JobEvent | QueueEvent]:
        """The job's events (`GET /v1/jobs/{id}/events`): `ProgressEvent`s while it is queued
        or running, then one `StatusEvent` with the ended job, and the iterator ends. A stream
        that the service ends (it does every few minutes) or that drops is opened again with
        `Last-Event-ID`, so no event is seen twice. With `queue=True`, also a `QueueEvent`
        with the job's place in line while it is queued, at once and whenever it changes (a
        reopened stream tells the current place again)."""
        decoder = SSEDecoder()
        decoder.resume_from(last_event_id)
        drops = 0
        while True:
            response = self._send(
                calls.events(job_id, last_event_id=decoder.last_event_id), stream=True
            )
            try:
                calls.check_stream(response)
                for chunk in response.iter_bytes():
                    for sse in decoder.feed(chunk):
                        event = calls.read_event(sse, queue=queue)
                        if event is None:
                            continue
                        drops = 0
                        yield event
                        if isinstance(event, StatusEvent):
                            return
            except RETRYABLE_TRANSPORT_ERRORS as exc:
                drops += 1
                if drops >= self._settings.retry.max_attempts:
                    raise ServiceUnreachable(calls.origin(response.request.url), exc) from exc
            finally:
                response.close()
            decoder = decoder.reconnected()
            time.sleep(calls.reconnect_delay(decoder, self._settings.retry, drops))

    @overload
    def download(self, image: Image | str) -> bytes: ...
    @overload
    def download(self, image: Image | str, to: str | os.PathLike[str]) -> Path: ...
    def download(
        self, image: Image | str, to: str | os.PathLike[str] | None = None
    ) -> bytes | Path:
        """An image's bytes, from its signed URL (the API key is not sent with it); with `to`,
        written to that file, whose path is returned."""
        url = image.url if isinstance(image, Image) else image
        request = self._http.build_request("GET", url, headers={"Accept": "image/png, */*"})
        content = self._send_request(request).content
        if to is None:
            return content
        path = Path(to)
        path.write_bytes(content)
        return path

    def _send(
        self, call: calls.Call, *, stream: bool = False, attempts: builtins.list[int] | None = None
    ) -> httpx.Response:
        return self._send_request(self._settings.build(self._http, call), stream, attempts)

    def _send_request(
        self,
        request: httpx.Request,
        stream: bool = False,
        attempts: builtins.list[int] | None = None,
    ) -> httpx.Response:
        """The answer to `request`, sent again as the retry policy allows; an error answer is
        raised as its `ApiError`, no answer as `ServiceUnreachable`."""
        policy, waited, attempt = self._settings.retry, 0.0, 0
        safe = is_retry_safe(request)
        while True:
            attempt += 1
            if attempts is not None:
                attempts.append(attempt)
            try:
                response = self._http.send(request, stream=stream)
            except RETRYABLE_TRANSPORT_ERRORS as exc:
                delay = policy.delay(attempt=attempt, waited_s=waited, response=None)
                if delay is None or not safe:
                    raise ServiceUnreachable(calls.origin(request.url), exc) from exc
            except httpx.TransportError as exc:
                raise ServiceUnreachable(calls.origin(request.url), exc) from exc
            else:
                if response.status_code < 400:
                    return response
                response.read()
                response.close()
                delay = policy.delay(attempt=attempt, waited_s=waited, response=response)
                if delay is None or not safe:
                    raise error_from_response(response)
            time.sleep(delay)
            waited += delay
