"""A small HTTP/1.1 load generator: N keep-alive connections on one asyncio loop (uvloop where
it is installed), each sending pre-built request bytes and reading the answer back.

Why not httpx: on a 2-core machine a Python HTTP client spends more CPU per request than the
service does, so a bench driven by one measures the client. Here a request costs the client a
`write` of bytes built beforehand and a parse of the status line, the headers and a
Content-Length body (chunked bodies are read too; anything else fails loudly), so the service
gets the cores and its latency is its own.

Each connection takes the next request from a shared counter until `total` are answered, so
`connections` requests are always in flight (a closed loop). Latencies are per request, from
the write to the last byte of the body (time.perf_counter). Bodies are kept when asked, and
parsed after the run (`ids_of`), never during it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

MakeRequest = Callable[[int], bytes]


class ProtocolError(RuntimeError):
    """The server answered something this generator does not read."""


def request_bytes(
    method: str,
    path: str,
    *,
    host: str,
    api_key: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """One HTTP/1.1 request, ready to write on a keep-alive connection."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if api_key is not None:
        lines.append(f"Authorization: Bearer {api_key}")
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def json_request(
    method: str, path: str, payload: Any, *, host: str, api_key: str | None = None
) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return request_bytes(method, path, host=host, api_key=api_key, body=body)


@dataclass
class LoadResult:
    connections: int
    requests: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    # (status, body) of each answer, when the run kept them.
    bodies: list[tuple[int, bytes]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def count(self, low: int, high: int) -> int:
        """Answers whose status is in [low, high)."""
        return sum(n for status, n in self.statuses.items() if low <= status < high)


def ids_of(result: LoadResult, *, ok: tuple[int, ...] = (200, 201, 202)) -> list[str]:
    """The `id` of each answer with a status in `ok` (a submit's job id)."""
    ids = []
    for status, body in result.bodies:
        if status in ok:
            ids.append(str(json.loads(body)["id"]))
    return ids


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, header_block = head.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    keep_alive = parts[0] == b"HTTP/1.1"
    for line in header_block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
    if chunked:
        return status, await _read_chunked(reader), keep_alive
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            return status, b"", keep_alive
        raise ProtocolError(f"a {status} answer with neither Content-Length nor chunked body")
    return status, await reader.readexactly(length), keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the end
                pass
            return bytes(body)
        body += await reader.readexactly(size + 2)
        del body[-2:]


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            await self.open()
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise ProtocolError("the connection did not open")
        writer.write(request)
        status, body, keep_alive = await _read_response(reader)
        if not keep_alive:
            await self.close()
        return status, body

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _load(
    host: str,
    port: int,
    make_request: MakeRequest,
    *,
    total: int,
    connections: int,
    keep_bodies: bool,
) -> LoadResult:
    result = LoadResult(connections=connections)
    pool = [_Connection(host, port) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in pool))  # every connection up before the clock
    counter = iter(range(total))

    async def run(connection: _Connection) -> None:
        for index in counter:  # shared: each connection takes the next request
            request = make_request(index)
            started = time.perf_counter()
            try:
                status, body = await connection.send(request)
            except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                await connection.close()
                continue
            result.latencies_s.append(time.perf_counter() - started)
            result.statuses[status] += 1
            if keep_bodies:
                result.bodies.append((status, body))

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in pool))
    result.elapsed_s = time.perf_counter() - started
    result.requests = len(result.latencies_s)
    await asyncio.gather(*(c.close() for c in pool))
    return result


def _run(coroutine: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def run_load(
    host: str,
    port: int,
    make_request: MakeRequest,
    *,
    total: int,
    connections: int = 1,
    keep_bodies: bool = False,
) -> LoadResult:
    """Send `total` requests (`make_request(i)` for i in 0..total-1) over `connections`
    keep-alive connections, `connections` at a time; blocks until every one is answered."""
    if total < 1 or connections < 1:
        raise ValueError("total and connections must be at least 1")
    return _run(
        _load(
            host,
            port,
            make_request,
            total=total,
            connections=min(connections, total),
            keep_bodies=keep_bodies,
        )
    )
