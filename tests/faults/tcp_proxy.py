"""A TCP proxy that a test can cut and restore, standing between a process and a store it
talks to (the Firestore emulator, PostgreSQL, the GCS emulator).

While cut, the connections it was carrying are reset (what clients see when a server
restarts or a load balancer drops them) and new ones are either reset as soon as they are
accepted (`refuse`: the store is down) or accepted and never answered (`blackhole`: the store
is unreachable, and only the client's own timeouts end the wait). `restore` resumes
forwarding to the same target; clients reconnect on their own.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType
from typing import Literal, Self

CutMode = Literal["refuse", "blackhole"]

_BUFFER = 65536


def _reset(sock: socket.socket) -> None:
    """Drop a connection: the peer learns at once that it is gone (RST, not FIN). Shutting
    down the reading side wakes a pump thread blocked in recv, which a close alone would not."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Listens on host:port (a free port by default) and forwards each connection to
    target_host:target_port. Use as a context manager, or call start() and close()."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self._connect_timeout_s = connect_timeout_s
        self._listener = socket.create_server((host, port), reuse_port=False)
        self.host, self.port = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._mode: CutMode | None = None
        # Every socket this proxy holds open (both ends of forwarded connections, and
        # blackholed clients), so that cut() and close() can reset them.
        self._open: set[socket.socket] = set()
        self._closed = False
        self.accepted = 0
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name="tcp-proxy")

    @classmethod
    def to(cls, address: str) -> TcpProxy:
        """A started proxy to `address` ("host:port")."""
        host, _, port = address.rpartition(":")
        proxy = cls(host, int(port))
        proxy.start()
        return proxy

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    def start(self) -> None:
        if not self._acceptor.is_alive():
            self._acceptor.start()

    def cut(self, mode: CutMode = "refuse") -> None:
        """Reset every connection in flight; until restore(), refuse or blackhole new ones."""
        with self._lock:
            self._mode = mode
            doomed = list(self._open)
            self._open.clear()
        for sock in doomed:
            _reset(sock)

    def restore(self) -> None:
        """Forward again. Blackholed connections are reset (their clients have given up or
        will retry)."""
        with self._lock:
            self._mode = None
            doomed = list(self._open)
            self._open.clear()
        for sock in doomed:
            _reset(sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            doomed = list(self._open)
            self._open.clear()
        # shutdown() wakes the accept() blocked in the acceptor thread; close() would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in doomed:
            _reset(sock)
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- internals ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            with self._lock:
                if self._closed:
                    _reset(client)
                    return
                self.accepted += 1
                mode = self._mode
                if mode == "blackhole":
                    self._open.add(client)
                    continue
            if mode == "refuse":
                _reset(client)
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=self._connect_timeout_s)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self._lock:
            if self._mode is not None or self._closed:
                # Cut while we were connecting: this connection belongs to the outage.
                _reset(client)
                _reset(upstream)
                return
            self._open.update((client, upstream))
        # Each direction ends on its own (a half-close is passed on); the pair is closed
        # when both have.
        remaining = [2]
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink, remaining), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, remaining: list[int]) -> None:
        try:
            while True:
                data = source.recv(_BUFFER)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            cut = source not in self._open
        if not cut:  # pass a half-close on; a cut connection gets only its reset
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
        with self._lock:
            remaining[0] -= 1
            if remaining[0] > 0:
                return
            # Still ours unless cut() or close() took (and reset) them meanwhile.
            ours = source in self._open
            self._open.difference_update((source, sink))
        if ours:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
