"""OpenAI shapes shared by every layer: message content to text, an answer's text, a
streamed answer assembled into one, a whole answer cut into the events a stream of it
carries, and a request asked without streaming.

Invariant: these are pure functions of JSON values (no I/O, no state), so the gateway, the
student server, the distiller and the audits read and write the same shapes the same way.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import orjson

DONE = b"data: [DONE]"
_WS = re.compile(r"\s+")


def content_text(content: Any) -> str:
    """A message's `content` as text: a string as is, a list of parts joined by spaces
    (a part without text counts as an empty string: curation's split hash depends on it)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def role_text(messages: Any, roles: tuple[str, ...]) -> list[str]:
    """The text of each message whose role is in `roles`, in order."""
    if not isinstance(messages, list):
        return []
    return [
        content_text(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") in roles
    ]


def prompt_text(messages: Any) -> str:
    """The user's side of a chat (system prompts excluded), or a completion prompt."""
    if isinstance(messages, str):
        return messages
    return "\n".join(role_text(messages, ("user",)))


def last_user_text(body: dict[str, Any]) -> str:
    """The last user turn of a chat request, or a completion's prompt."""
    if "messages" in body:
        users = role_text(body["messages"], ("user",))
        return users[-1] if users else ""
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else str(prompt)


def fingerprint_system_prompt(messages: Any) -> str:
    """A stable id for a workload's instructions: the system/developer text, lower-cased with
    whitespace collapsed, hashed. Unchanged apps are recognised by it."""
    parts = role_text(messages, ("system", "developer"))
    if not parts:
        return ""
    text = _WS.sub(" ", " ".join(parts)).strip().lower()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def answer_text(response: dict[str, Any]) -> str:
    """The first choice's answer: its content, or its tool calls as JSON."""
    choices = response.get("choices") or []
    if not choices:
        return ""
    first = choices[0]
    if "text" in first:
        return str(first.get("text") or "")
    message = first.get("message") or {}
    if message.get("tool_calls"):
        calls = [
            {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in message["tool_calls"]
        ]
        return orjson.dumps(calls).decode()
    return content_text(message.get("content"))


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


def confidence_of(response: dict[str, Any]) -> float | None:
    """exp(mean token logprob) of the first choice, or None when no logprobs came back."""
    choices = response.get("choices") or []
    if not choices:
        return None
    logprobs = (choices[0].get("logprobs") or {}).get("content") or []
    values = [t["logprob"] for t in logprobs if isinstance(t, dict) and "logprob" in t]
    if not values:
        return None
    return math.exp(sum(values) / len(values))
