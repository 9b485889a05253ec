"""Anthropic's Messages API in terms of chat completions, both ways.

A Messages request (system prompt, text/image/tool_use/tool_result blocks, tools with
`input_schema`) becomes a chat request; the chat answer becomes a Message, a chat stream
Anthropic's SSE events (`message_start` ... `message_stop`), and an error Anthropic's
`{"type": "error", "error": {...}}`. An Anthropic upstream is then reached through the same
chat path (litellm speaks its native API), and an OpenAI-compatible student serves an
Anthropic-SDK app.

Which top-level field becomes what is one table, `contracts/anthropic_fields.py`.

Invariant: pure functions of JSON values; what cannot be expressed in chat terms is an
`ApiError` 400 naming the field.
"""

from __future__ import annotations

from typing import Any

import orjson

from contracts.anthropic_fields import reasoning_effort
from contracts.errors import ApiError

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, code="invalid_value", param=param)


def _text(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    if isinstance(blocks, list):
        return "".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))
    return ""


def _image(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise _bad(param, f"Unsupported image source {source.get('type')!r}.")
    return {"type": "image_url", "image_url": {"url": url}}


def _turn(role: str, content: Any, param: str) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages (tool results become tool messages)."""
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _bad(param, f"Invalid value for '{param}': expected a string or a list of blocks.")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"{param}.{i}"
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block, where))
        elif kind == "tool_use" and role == "assistant":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            call = {"name": str(block.get("name", "")), "arguments": arguments}
            calls.append({"id": str(block.get("id", "")), "type": "function", "function": call})
        elif kind == "tool_result" and role == "user":
            body = block.get("content", "")
            text = body if isinstance(body, str) else _text(body)
            if block.get("is_error"):
                text = f"[tool error] {text}"
            results.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise _bad(where, f"Unsupported content block {kind!r} in a {role} message.")
    out: list[dict[str, Any]] = list(results)
    if parts or calls:
        only_text = all(p["type"] == "text" for p in parts)
        text_content: Any = "".join(p["text"] for p in parts) if only_text else parts
        message: dict[str, Any] = {"role": role, "content": text_content or None}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request an Anthropic Messages request asks."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system)})
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise _bad("messages", "Invalid value for 'messages': expected a non-empty list.")
    for i, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, dict) else None
        if role == "system":
            # System turns inside `messages` (Claude Code sends them): a chat system message
            # at the same place.
            content = turn.get("content")
            if not isinstance(content, str | list):
                raise _bad(
                    f"messages.{i}.content",
                    f"Invalid value for 'messages.{i}.content': expected text.",
                )
            messages.append({"role": "system", "content": _text(content)})
            continue
        if role not in ("user", "assistant"):
            raise _bad(f"messages.{i}.role", f"Invalid value for 'messages.{i}.role': {role!r}.")
        messages += _turn(role, turn.get("content"), f"messages.{i}.content")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("max_tokens", "Missing or invalid required parameter: 'max_tokens'.")
    chat: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "max_tokens": max_tokens,
    }
    for name in ("temperature", "top_p"):
        if name in body:
            chat[name] = body[name]
    output = body.get("output_config")
    if isinstance(output, dict) and output.get("format") is not None:
        chat["response_format"] = _response_format(output["format"])
    if effort := reasoning_effort(body.get("thinking")):
        chat["reasoning_effort"] = effort
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    user = (
        (body.get("metadata") or {}).get("user_id")
        if isinstance(body.get("metadata"), dict)
        else None
    )
    if user:
        chat["user"] = str(user)
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in ("auto", "any", "none"):
            chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    for name in ("tags", "flywheel_metadata", "flywheel_tags"):
        if name in body:
            chat[name] = body[name]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _response_format(fmt: Any) -> dict[str, Any]:
    """Structured output (`output_config.format`, a JSON schema) as chat's
    `response_format`."""
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _bad(
            "output_config.format",
            "Only output_config.format of type 'json_schema' can be expressed here.",
        )
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _bad("output_config.format.schema", "Expected a JSON schema object.")
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "Invalid value for 'tools': expected a list.")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or "name" not in tool:
            raise _bad(
                f"tools.{i}", "Only custom tools with a name and input_schema are supported here."
            )
        fn = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


# --- answers -----------------------------------------------------------------------------


def message_id(request_id: str) -> str:
    return "msg_" + request_id.replace("-", "")


def _arguments(raw: str) -> Any:
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {"_raw": raw}


def from_chat(answer: dict[str, Any], model: Any, request_id: str) -> dict[str, Any]:
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": str(message["content"])})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id", "")),
                "name": str(fn.get("name", "")),
                "input": _arguments(str(fn.get("arguments", ""))),
            }
        )
    usage = answer.get("usage") or {}
    return {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


def error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
    }


class StreamTranslator:
    """Chat completion chunks in, Anthropic stream events out (one per stream)."""

    def __init__(self, model: Any, request_id: str) -> None:
        self.model = model
        self.id = message_id(request_id)
        self.block = -1  # index of the open content block
        self.open_kind = ""  # "text" | "tool" | ""
        self.calls: dict[int, int] = {}  # chat tool-call index -> block index
        self.usage: dict[str, Any] = {}
        self.finish = ""

    @staticmethod
    def _event(kind: str, **data: Any) -> bytes:
        return (
            b"event: "
            + kind.encode()
            + b"\ndata: "
            + orjson.dumps({"type": kind, **data})
            + b"\n\n"
        )

    def start(self) -> list[bytes]:
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [self._event("message_start", message=message)]

    def _close(self) -> list[bytes]:
        if not self.open_kind:
            return []
        self.open_kind = ""
        return [self._event("content_block_stop", index=self.block)]

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.open_kind != "text":
                    out += self._close()
                    self.block += 1
                    self.open_kind = "text"
                    out.append(
                        self._event(
                            "content_block_start",
                            index=self.block,
                            content_block={"type": "text", "text": ""},
                        )
                    )
                out.append(
                    self._event(
                        "content_block_delta",
                        index=self.block,
                        delta={"type": "text_delta", "text": delta["content"]},
                    )
                )
            for call in delta.get("tool_calls") or []:
                i = int(call.get("index", 0))
                fn = call.get("function") or {}
                if i not in self.calls:
                    out += self._close()
                    self.block += 1
                    self.calls[i] = self.block
                    self.open_kind = "tool"
                    block = {
                        "type": "tool_use",
                        "id": str(call.get("id", f"call_{i}")),
                        "name": str(fn.get("name", "")),
                        "input": {},
                    }
                    out.append(
                        self._event("content_block_start", index=self.block, content_block=block)
                    )
                if fn.get("arguments"):
                    delta_json = {"type": "input_json_delta", "partial_json": fn["arguments"]}
                    out.append(
                        self._event("content_block_delta", index=self.calls[i], delta=delta_json)
                    )
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def finish_events(self) -> list[bytes]:
        usage = {
            "input_tokens": int(self.usage.get("prompt_tokens") or 0),
            "output_tokens": int(self.usage.get("completion_tokens") or 0),
        }
        delta = {"stop_reason": _STOP.get(self.finish, "end_turn"), "stop_sequence": None}
        return [
            *self._close(),
            self._event("message_delta", delta=delta, usage=usage),
            self._event("message_stop"),
        ]

    def error(self, error: dict[str, Any]) -> list[bytes]:
        body = error_body(502, str(error.get("message", "upstream error")))
        return [b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"]
