"""Server-sent events (``text/event-stream``), parsed from a body's lines. Pure: the adapters
that read streams over HTTP (model providers, MCP servers) hand it the lines."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import msgspec

__all__ = ["ServerSentEvent", "read_events"]


class ServerSentEvent(msgspec.Struct, frozen=True):
    event: str
    data: str


async def read_events(lines: AsyncIterable[str]) -> AsyncIterator[ServerSentEvent]:
    """Parse ``event:`` and ``data:`` lines; a blank line ends one event."""
    event, data = "", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data))
            event, data = "", list[str]()
        elif line.startswith(":"):
            continue  # a comment, sent to keep the connection alive
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield ServerSentEvent(event or "message", "\n".join(data))
