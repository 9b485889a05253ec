"""Server-sent events on the hot path: an upstream byte stream cut into whole events, and a
whole answer served as a stream.

The hot path only cuts the upstream byte stream into whole events (so ids can be rewritten
and the usage chunk dropped without parsing); the row later folds the kept events into one
answer (`contracts.openai_shapes.assemble_chat`). A native stream (Responses, Anthropic) is
read as the chat chunks it amounts to, its own events kept for the client (`as_chat_stream`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from contracts.openai_shapes import answer_as_events
from contracts.responses_native import event_payload
from gateway.upstream import UpstreamStream


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield whole events (without the blank line that ends them)."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r\n" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        while True:
            cut = buffer.find(b"\n\n")
            if cut < 0:
                break
            event, buffer = buffer[:cut], buffer[cut + 2 :]
            if event.strip():
                yield event
    if buffer.strip():
        yield buffer.strip()


def replay(answer: dict[str, Any]) -> UpstreamStream:
    """A whole chat completion served as the event stream an upstream would have sent."""
    events = answer_as_events(answer)

    async def chunks() -> AsyncIterator[bytes]:
        for event in events:
            yield event + b"\n\n"

    return UpstreamStream(chunks())


class ChatReader(Protocol):
    """Reads a native event stream as the chat chunks it amounts to."""

    def feed(self, event: dict[str, Any]) -> list[bytes]: ...


def as_chat_stream(
    upstream: UpstreamStream, raw_events: list[bytes], converter: ChatReader
) -> UpstreamStream:
    """A native event stream (Responses API, Anthropic Messages) as chat chunks for the
    request path; each upstream event is also appended, untouched, to `raw_events` for the
    client."""

    async def chunks() -> AsyncIterator[bytes]:
        async for event in sse_events(aiter(upstream)):
            raw_events.append(event + b"\n\n")
            payload = event_payload(event)
            for chunk in converter.feed(payload) if payload is not None else []:
                yield chunk + b"\n\n"

    return UpstreamStream(chunks(), upstream.close)
