"""The fault-injection proxy itself (tests/faults/tcp_proxy.py), against a local echo server:
it forwards, a cut resets what it carries and refuses or blackholes new connections, and a
restore forwards again."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.faults.tcp_proxy import TcpProxy


@pytest.fixture
def echo() -> Iterator[str]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(ConnectionResetError):
            while data := conn.recv(1024):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def roundtrip(proxy: TcpProxy, payload: bytes = b"ping") -> bytes:
    with socket.create_connection((proxy.host, proxy.port), timeout=2) as conn:
        conn.sendall(payload)
        answer = conn.recv(1024)
    if not answer:
        raise ConnectionResetError("closed without an answer")
    return answer


def test_forwards_then_refuses_while_cut_then_forwards_again(echo: str) -> None:
    proxy = TcpProxy.to(echo)
    try:
        assert roundtrip(proxy) == b"ping"
        held = socket.create_connection((proxy.host, proxy.port), timeout=2)
        held.sendall(b"a")
        assert held.recv(8) == b"a"

        proxy.cut("refuse")
        # The connection in flight is dropped, and a new one is reset, not answered.
        with pytest.raises(ConnectionResetError):
            held.sendall(b"b")
            if not held.recv(8):
                raise ConnectionResetError("closed")
        held.close()
        with pytest.raises(OSError):
            roundtrip(proxy)

        proxy.restore()
        assert roundtrip(proxy, b"again") == b"again"
    finally:
        proxy.close()


def test_a_blackholed_connection_is_accepted_and_never_answered(echo: str) -> None:
    with TcpProxy.to(echo) as proxy:
        proxy.cut("blackhole")
        with socket.create_connection((proxy.host, proxy.port), timeout=2) as conn:
            conn.sendall(b"hello?")
            conn.settimeout(0.3)
            with pytest.raises(TimeoutError):
                conn.recv(8)
        proxy.restore()
        assert roundtrip(proxy) == b"ping"
