"""A native Anthropic Messages answer read as a chat completion, for the gateway's own use.

When a Messages request passes through to an Anthropic upstream, the client gets the
upstream's message and events untouched; the gateway still needs the chat form for the
row, pricing and distillation. The reverse of `contracts/anthropic_shapes.py`.

Invariant: pure functions of JSON values; what has no chat equivalent (thinking blocks,
citations) is left out of the chat form, never invented. Prompt-cache accounting is kept the
way litellm reads an Anthropic answer: `prompt_tokens` counts cache reads and writes too,
`prompt_tokens_details.cached_tokens` the reads, with `cache_read_input_tokens` and
`cache_creation_input_tokens` beside them (what `contracts.pricing.billed_tokens` prices).
"""

from __future__ import annotations

from typing import Any

import orjson

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def _tokens(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return int(value) if isinstance(value, int | float) and value > 0 else 0


def chat_usage(fresh: int, output: int, read: int = 0, write: int = 0) -> dict[str, Any]:
    """Anthropic's counts (input_tokens apart from cache reads and writes) in chat form."""
    prompt = fresh + read + write
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
    }
    if read or write:
        usage.update(
            prompt_tokens_details={"cached_tokens": read},
            cache_read_input_tokens=read,
            cache_creation_input_tokens=write,
        )
    return usage


def _usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    return chat_usage(
        _tokens(usage, "input_tokens"),
        _tokens(usage, "output_tokens"),
        _tokens(usage, "cache_read_input_tokens"),
        _tokens(usage, "cache_creation_input_tokens"),
    )


def chat_answer(message: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message as the chat completion it amounts to."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            text.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            fn = {"name": str(block.get("name", "")), "arguments": arguments}
            calls.append({"id": str(block.get("id", "")), "type": "function", "function": fn})
    chat_message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        chat_message["tool_calls"] = calls
    finish = _FINISH.get(str(message.get("stop_reason")), "stop")
    answer: dict[str, Any] = {
        "id": str(message.get("id", "")),
        "object": "chat.completion",
        "model": message.get("model"),
        "choices": [{"index": 0, "message": chat_message, "finish_reason": finish}],
    }
    usage = _usage(message.get("usage"))
    if usage is not None:
        answer["usage"] = usage
    return answer


class ChatChunks:
    """Anthropic stream events in, the chat chunks they amount to out (one per stream)."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}  # content block index -> chat tool-call index
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read = 0
        self.cache_write = 0
        self.finish = "stop"

    @staticmethod
    def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": [choice]})

    def feed(self, event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type")
        if kind == "message_start":
            usage = (event.get("message") or {}).get("usage") or {}
            self.input_tokens = _tokens(usage, "input_tokens")
            self.cache_read = _tokens(usage, "cache_read_input_tokens")
            self.cache_write = _tokens(usage, "cache_creation_input_tokens")
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use":
                return []
            index = self.calls[int(event.get("index", 0))] = len(self.calls)
            fn = {"name": str(block.get("name", "")), "arguments": ""}
            call = {
                "index": index,
                "id": str(block.get("id", "")),
                "type": "function",
                "function": fn,
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": str(delta.get("text", ""))})]
            if delta.get("type") == "input_json_delta":
                index = self.calls.get(int(event.get("index", 0)), 0)
                fn = {"arguments": str(delta.get("partial_json", ""))}
                return [self._chunk({"tool_calls": [{"index": index, "function": fn}]})]
            return []
        if kind == "message_delta":
            self.finish = _FINISH.get(str((event.get("delta") or {}).get("stop_reason")), "stop")
            usage = event.get("usage") or {}
            self.output_tokens = _tokens(usage, "output_tokens") or self.output_tokens
            self.input_tokens = _tokens(usage, "input_tokens") or self.input_tokens
            self.cache_read = _tokens(usage, "cache_read_input_tokens") or self.cache_read
            self.cache_write = _tokens(usage, "cache_creation_input_tokens") or self.cache_write
            return []
        if kind == "message_stop":
            usage = chat_usage(
                self.input_tokens, self.output_tokens, self.cache_read, self.cache_write
            )
            tail = {"object": "chat.completion.chunk", "choices": [], "usage": usage}
            return [self._chunk({}, self.finish), b"data: " + orjson.dumps(tail), b"data: [DONE]"]
        if kind == "error":
            err = event.get("error") or {}
            body = {
                "error": {
                    "message": str(err.get("message") or "upstream error"),
                    "type": "upstream_error",
                }
            }
            return [b"data: " + orjson.dumps(body)]
        return []
