"""A real webhook endpoint on 127.0.0.1 for tests: an HTTP server that answers each POST with
the status its `answer` function picks and keeps every request it got."""

from __future__ import annotations

import ssl
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
    def __init__(
        self, answer: Answer, path: str = "/hook", tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            # The handshake runs in accept(); one that fails drops that connection only.
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.answer = answer
        self.path = path
        self.scheme = "https" if tls is not None else "http"
        self.received: list[Received] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return self.url_for("127.0.0.1")

    def url_for(self, host: str) -> str:
        """This receiver's URL under another name (which a test's resolver maps here)."""
        return f"{self.scheme}://{host}:{self.port}{self.path}"


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
def running_receiver(
    answer: Answer, path: str = "/hook", tls: ssl.SSLContext | None = None
) -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(answer, path, tls)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
