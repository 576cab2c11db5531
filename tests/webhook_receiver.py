"""A real webhook endpoint on 127.0.0.1 for tests: an HTTP server that answers each POST with
the status its `answer` function picks and keeps every request it got."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # names title-cased, as a framework would hand them over
    body: bytes
    status: int  # what the receiver answered


# Given what was received before this request, and this request's headers and body: the status.
Answer = Callable[[list[Received], dict[str, str], bytes], int]


def always(status: int) -> Answer:
    return lambda _before, _headers, _body: status


def failing_first(status: int = 500, then: int = 204) -> Answer:
    """`status` for the first request, `then` for every one after it."""
    return lambda before, _headers, _body: status if not before else then


class WebhookReceiver(ThreadingHTTPServer):
    def __init__(self, answer: Answer, path: str = "/hook") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.path = path
        self.received: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.path}"


class _Handler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name.title(): value for name, value in self.headers.items()}
        with self.server.lock:
            status = self.server.answer(list(self.server.received), headers, body)
            self.server.received.append(Received(headers, body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@contextmanager
def running_receiver(answer: Answer, path: str = "/hook") -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(answer, path)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
