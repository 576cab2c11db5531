"""`text/event-stream` read as the HTML standard says (9.2.6 "Interpreting an event stream"),
from bytes as they arrive.

Lines end with CRLF, LF or CR alone, and nothing else: a JSON `data` line may hold U+2028 or
other characters that `str.splitlines` (and so `httpx.Response.iter_lines`) would split on.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_END_OF_LINE = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str  # "message" when the stream named no type
    data: str
    id: str  # the stream's last event id when the event was dispatched ("" for none yet)


class SSEDecoder:
    """Feed it the stream's bytes; it returns the events they complete. `last_event_id` and
    `retry_ms` hold what the stream said last, for a reconnection: the id only once its event
    is complete (an `id:` line of an event cut off by a dropped connection does not count)."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._skip_lf = False  # the last chunk ended in CR: a LF first in the next one ends no line
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._id = ""
        self.last_event_id = ""
        self.retry_ms: int | None = None

    def reconnected(self) -> SSEDecoder:
        """A decoder for the next connection: it forgets a half-read event, and remembers the
        last event id and the reconnection time."""
        fresh = SSEDecoder()
        fresh.resume_from(self.last_event_id)
        fresh.retry_ms = self.retry_ms
        return fresh

    def resume_from(self, last_event_id: str) -> None:
        """Start from this event id, as a `Last-Event-ID` sent on connecting."""
        self._id = self.last_event_id = last_event_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        events = []
        for line in self._lines(self._text.decode(chunk)):
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _lines(self, text: str) -> list[str]:
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        buffer = self._pending + text
        lines = []
        start = 0
        for match in _END_OF_LINE.finditer(buffer):
            lines.append(buffer[start : match.start()])
            start = match.end()
        self._pending = buffer[start:]
        self._skip_lf = buffer.endswith("\r")
        return lines

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment, such as the service's keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        self.last_event_id = self._id
        if not data:
            return None
        return ServerSentEvent(
            event=event or "message", data="\n".join(data), id=self.last_event_id
        )
