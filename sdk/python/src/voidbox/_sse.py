"""A small Server-Sent Events parser, shared by the sync and async clients.

It follows the WHATWG rules the daemon's streams need: ``event:``, ``id:``,
``data:`` (several lines join with ``\\n``) and ``retry:`` fields, one
optional space after the colon, comment lines (``:``) ignored, and an
event dispatched at each blank line. A block without ``data`` dispatches
nothing; an unterminated block at the end of the stream is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterable, AsyncIterator, Iterable, Iterator, Optional

__all__ = ["SSEEvent", "SSEParser", "iter_sse", "aiter_sse"]


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event.

    ``id`` is the ``id:`` field of this event's own block (``None`` when it
    had none); :attr:`SSEParser.last_event_id` keeps the stream's last one.
    """

    event: str = "message"
    data: str = ""
    id: Optional[str] = None
    retry: Optional[int] = None


class SSEParser:
    """Feed it lines (without their line ending); it returns events."""

    def __init__(self) -> None:
        self.last_event_id: Optional[str] = None
        self._reset()

    def _reset(self) -> None:
        self._event: Optional[str] = None
        self._data: list[str] = []
        self._id: Optional[str] = None
        self._retry: Optional[int] = None

    def feed(self, line: str) -> Optional[SSEEvent]:
        """Takes one line; returns the event a blank line completes."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
                self.last_event_id = value
        elif field == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> Optional[SSEEvent]:
        if not self._data:
            self._reset()
            return None
        event = SSEEvent(
            event=self._event or "message",
            data="\n".join(self._data),
            id=self._id,
            retry=self._retry,
        )
        self._reset()
        return event


def iter_sse(lines: Iterable[str]) -> Iterator[SSEEvent]:
    """The events in an iterable of lines."""
    parser = SSEParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


async def aiter_sse(lines: AsyncIterable[str]) -> AsyncIterator[SSEEvent]:
    """The events in an async iterable of lines."""
    parser = SSEParser()
    async for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event
