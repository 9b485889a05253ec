"""Server-sent events: split on the hot path, assembled into one answer off it.

The hot path only cuts the upstream byte stream into whole events (so ids can be rewritten
and the usage chunk dropped without parsing); the log writer's thread later parses the kept
events into the assistant message, finish reason and usage that land in ClickHouse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.upstream import UpstreamStream

DONE = b"data: [DONE]"


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


def event_json(event: bytes) -> dict[str, Any] | None:
    """The JSON payload of a `data:` event, or None for `[DONE]`, comments and junk."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return None
            try:
                value = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def is_usage_only(event: bytes) -> bool:
    """The chunk `stream_options.include_usage` adds: usage and an empty `choices`."""
    if b'"usage"' not in event or b'"choices"' not in event:
        return False
    data = event_json(event)
    return bool(data) and data.get("choices") == [] and bool(data.get("usage"))  # type: ignore[union-attr]


def assemble_chat(events: list[bytes]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Fold chat-completion chunks into `{"choices": [...]}` and return it with the usage."""
    choices: dict[int, dict[str, Any]] = {}
    usage: dict[str, Any] | None = None
    for event in events:
        data = event_json(event)
        if not data:
            continue
        if data.get("usage"):
            usage = data["usage"]
        for ch in data.get("choices") or []:
            idx = int(ch.get("index", 0))
            out = choices.setdefault(
                idx, {"index": idx, "message": {"role": "assistant", "content": ""}}
            )
            if "text" in ch:  # legacy completions stream
                out.setdefault("text", "")
                out["text"] += ch.get("text") or ""
            delta = ch.get("delta") or {}
            msg = out["message"]
            if delta.get("role"):
                msg["role"] = delta["role"]
            if delta.get("content"):
                msg["content"] += delta["content"]
            for tc in delta.get("tool_calls") or []:
                calls = msg.setdefault("tool_calls", [])
                i = int(tc.get("index", len(calls)))
                while len(calls) <= i:
                    calls.append(
                        {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                    )
                call = calls[i]
                if tc.get("id"):
                    call["id"] = tc["id"]
                fn = tc.get("function") or {}
                call["function"]["name"] += fn.get("name") or ""
                call["function"]["arguments"] += fn.get("arguments") or ""
            if ch.get("finish_reason"):
                out["finish_reason"] = ch["finish_reason"]
    ordered = [choices[i] for i in sorted(choices)]
    for ch in ordered:
        if "text" in ch:
            ch.pop("message", None)
    return {"choices": ordered}, usage


def answer_as_events(answer: dict[str, Any]) -> list[bytes]:
    """A whole chat completion as the chunks a stream of it would have carried (used when a
    student's answer had to be checked before any of it could be sent)."""
    base = {k: answer.get(k) for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    events = []
    for ch in answer.get("choices") or []:
        msg = ch.get("message") or {}
        delta = {"role": "assistant", "content": msg.get("content") or ""}
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(msg["tool_calls"])]
        events.append({**base, "choices": [{"index": ch.get("index", 0), "delta": delta}]})
        events.append(
            {
                **base,
                "choices": [
                    {
                        "index": ch.get("index", 0),
                        "delta": {},
                        "finish_reason": ch.get("finish_reason") or "stop",
                    }
                ],
            }
        )
    if answer.get("usage"):
        events.append({**base, "choices": [], "usage": answer["usage"]})
    return [b"data: " + orjson.dumps(e) for e in events] + [DONE]


def without_stream(body: dict[str, Any]) -> dict[str, Any]:
    """The same request asked for a whole answer (checks, shadows, audits need one)."""
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


def replay(answer: dict[str, Any]) -> UpstreamStream:
    """A whole chat completion served as the event stream an upstream would have sent."""
    events = answer_as_events(answer)

    async def chunks() -> AsyncIterator[bytes]:
        for event in events:
            yield event + b"\n\n"

    return UpstreamStream(chunks())
