"""The POST itself, behind a port so the dispatcher can be tested with a fake that records."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

import httpx

from dal.errors import SendFailed
from dal.webhooks.urls import WebhookTarget

USER_AGENT = "txt2img-webhooks/1"


class WebhookSender(Protocol):
    def post(self, target: WebhookTarget, body: bytes, headers: Mapping[str, str]) -> int:
        """POST `body` to one of the target's checked addresses; returns the HTTP status.
        Raises SendFailed without an answer."""
        ...

    def close(self) -> None: ...


class HttpxSender:
    """Connects only to the addresses the URL policy checked, never to what the name resolves
    to now: the request goes to `https://<address>:<port>/...` with the `Host` header and the
    TLS server name (httpcore's `sni_hostname` request extension, which is also the name the
    certificate is verified against) set to the URL's host.

    Redirects are not followed: a 3xx is the receiver's answer (final), and following it
    would let a public URL bounce the request to a private one. The response body is never
    read (only the status counts), and `timeout_s` bounds the whole attempt, not each read.
    """

    def __init__(self, *, timeout_s: float, verify: ssl.SSLContext | None = None) -> None:
        self._timeout_s = timeout_s
        transport = httpx.HTTPTransport(
            verify=verify if verify is not None else True,
            # Pooled connections are keyed by address, not name: one opened (and its
            # certificate verified) for one host must not carry another host's delivery.
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._client = httpx.Client(
            transport=transport,
            timeout=timeout_s,
            follow_redirects=False,
            # No proxy from HTTP(S)_PROXY: it would connect wherever the name leads it. (Given
            # a transport, httpx 0.28+ skips them anyway; this keeps it so.)
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )

    def post(self, target: WebhookTarget, body: bytes, headers: Mapping[str, str]) -> int:
        """Tries the checked addresses in order until one connects (as a client resolving
        the name itself would); what is sent goes to that one only."""
        if not target.addresses:
            raise SendFailed("no checked address to connect to")
        failure = ""
        with _Deadline(self._timeout_s) as deadline:
            for address in target.addresses:
                remaining = deadline.remaining()
                if remaining <= 0:
                    break
                try:
                    return self._post_to(address, target, body, headers, deadline, remaining)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    # Nothing was sent: the next address may answer.
                    failure = f"{type(exc).__name__}: {exc}"
                except (httpx.HTTPError, OSError) as exc:
                    # A read timeout is the deadline too: each operation gets what is left.
                    if not (deadline.expired or isinstance(exc, httpx.TimeoutException)):
                        raise SendFailed(f"{type(exc).__name__}: {exc}") from exc
                    failure = ""
                    break
            if deadline.expired or not failure:
                raise SendFailed(f"no answer within {self._timeout_s:g} s")
            raise SendFailed(failure)

    def _post_to(
        self,
        address: str,
        target: WebhookTarget,
        body: bytes,
        headers: Mapping[str, str],
        deadline: _Deadline,
        remaining: float,
    ) -> int:
        url = httpx.URL(target.url)
        try:
            pinned = url.copy_with(host=address)
        except httpx.InvalidURL as exc:
            raise SendFailed(f"cannot connect to {address}: {exc}") from exc
        request = self._client.build_request(
            "POST",
            pinned,
            content=body,
            headers={
                "Content-Type": "application/json",
                **headers,
                "Host": url.netloc.decode("ascii"),
            },
            timeout=httpx.Timeout(remaining),
            extensions={
                # httpcore: the TLS server_hostname (SNI and certificate check) when set,
                # else the URL's host, which is the address here.
                "sni_hostname": url.raw_host.decode("ascii"),
                "trace": deadline.trace,
            },
        )
        # Streamed and closed unread: a receiver cannot make this process hold its body.
        response = self._client.send(request, stream=True)
        response.close()
        return response.status_code

    def close(self) -> None:
        self._client.close()


class _Deadline:
    """Cuts an attempt off after `seconds` in all. httpx's timeouts apply to each connect,
    read and write: a receiver that trickles a byte at a time would never trip them. The
    sockets httpcore opens are reported through its `trace` extension; when time is up they
    are shut down, which ends any blocking read or write on them at once."""

    def __init__(self, seconds: float) -> None:
        self._ends_at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def remaining(self) -> float:
        return self._ends_at - time.monotonic()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        raw = info["return_value"].get_extra_info("socket")
        if not isinstance(raw, socket.socket):
            return
        # A duplicate, because wrapping the socket in TLS detaches the original object; a
        # shutdown through either descriptor ends the one connection.
        sock = raw.dup()
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # OSError: the connection is already gone.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
