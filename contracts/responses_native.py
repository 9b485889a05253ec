"""A native Responses-API answer read as a chat completion, for the gateway's own use.

When an upstream serves the Responses API itself, the client gets the upstream's object and
events untouched; the gateway still needs the chat form for everything it does with an
answer (the row, pricing, audits, output checks, distillation). These functions give it,
the reverse of `contracts/responses_shapes.py`.

Invariant: pure functions of JSON values; what has no chat equivalent (reasoning items,
built-in tool calls) is left out of the chat form, never invented.
"""

from __future__ import annotations

from typing import Any

import orjson


def _usage(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    i, o = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def chat_answer(response: dict[str, Any]) -> dict[str, Any]:
    """A Responses object as the chat completion it amounts to."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    text.append(str(part.get("text", "")))
        elif item.get("type") == "function_call":
            fn = {"name": str(item.get("name", "")), "arguments": str(item.get("arguments", ""))}
            calls.append({"id": str(item.get("call_id", "")), "type": "function", "function": fn})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    finish = "tool_calls" if calls else "stop"
    if response.get("status") == "incomplete":
        finish = "length"
    answer: dict[str, Any] = {
        "id": str(response.get("id", "")),
        "object": "chat.completion",
        "created": int(response.get("created_at") or 0),
        "model": response.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    usage = _usage(response.get("usage"))
    if usage is not None:
        answer["usage"] = usage
    return answer


def event_payload(event: bytes) -> dict[str, Any] | None:
    """The JSON of one Responses SSE event (`event: ...` / `data: {...}` lines)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                data = orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                return None
            return data if isinstance(data, dict) else None
    return None


class ChatChunks:
    """Responses events in, the chat chunks they amount to out (one per stream)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}  # function-call item id -> chat tool-call index
        self.started = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        body = {"id": "", "object": "chat.completion.chunk", "choices": [choice]}
        return b"data: " + orjson.dumps(body)

    def feed(self, event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type")
        out: list[bytes] = []
        if not self.started and kind in ("response.created", "response.output_item.added"):
            self.started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        if kind == "response.output_text.delta":
            out.append(self._chunk({"content": str(event.get("delta", ""))}))
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                index = len(self.calls)
                self.calls[str(item.get("id", ""))] = index
                call = {
                    "index": index,
                    "id": str(item.get("call_id", "")),
                    "type": "function",
                    "function": {"name": str(item.get("name", "")), "arguments": ""},
                }
                out.append(self._chunk({"tool_calls": [call]}))
        elif kind == "response.function_call_arguments.delta":
            index = self.calls.get(str(event.get("item_id", "")), 0)
            fn = {"arguments": str(event.get("delta", ""))}
            out.append(self._chunk({"tool_calls": [{"index": index, "function": fn}]}))
        elif kind in ("response.completed", "response.incomplete"):
            final = chat_answer(event.get("response") or {})
            finish = final["choices"][0]["finish_reason"]
            out.append(self._chunk({}, finish))
            if "usage" in final:
                usage = {
                    "id": "",
                    "object": "chat.completion.chunk",
                    "choices": [],
                    "usage": final["usage"],
                }
                out.append(b"data: " + orjson.dumps(usage))
            out.append(b"data: [DONE]")
        elif kind in ("error", "response.failed"):
            err = event.get("error") or (event.get("response") or {}).get("error") or {}
            message = err.get("message") if isinstance(err, dict) else None
            body = {
                "error": {
                    "message": str(message or event.get("message") or "upstream error"),
                    "type": "upstream_error",
                }
            }
            out.append(b"data: " + orjson.dumps(body))
        return out
