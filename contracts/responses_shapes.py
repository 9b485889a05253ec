"""OpenAI's Responses API in terms of chat completions, both ways.

A Responses request becomes the chat request every upstream (teacher, student, vLLM,
litellm provider) speaks; the chat answer becomes a Responses object, and a chat stream the
Responses event stream (`response.created` ... `response.completed`, in
`contracts/responses_events.py`). The gateway logs the
chat form, so the distiller learns from a Responses request exactly as from a chat one.

Invariant: pure functions of JSON values; a request this cannot express in chat terms is an
`ApiError` 400 naming the field, never a silent drop of something that changes the answer.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from contracts.errors import ApiError

# A namespace's function in the chat form (chat has no namespaces): `<namespace>__<name>`,
# the flattening agents' own converters use; answers are mapped back by the request's
# declared namespaces, so a plain function whose name holds `__` is left alone.
NS_SEP = "__"

# Accepted and not needed in the chat form: they do not change the answer (`stream_options`:
# the gateway asks its own; `client_metadata`: Codex's bookkeeping of itself; `reasoning`:
# declared left out, see `not_carried`; `background`: only false, see `untranslatable`).
_IGNORED = {
    "store",
    "include",
    "truncation",
    "reasoning",
    "service_tier",
    "background",
    "stream_options",
    "client_metadata",
}
# Carried to the chat request under the same name (chat completions has each of them).
_SAMPLING = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "seed",
    "top_logprobs",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
)
# Read by `to_chat` itself (or by the gateway: `previous_response_id`, its own fields).
_READ = {
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "text",
    "stream",
    "previous_response_id",
    "max_output_tokens",
    "metadata",
    "tags",
    "flywheel_metadata",
    "flywheel_tags",
}


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, code="invalid_value", param=param)


def _content(parts: Any, param: str) -> str | list[dict[str, Any]]:
    """Responses content parts as chat content (text parts, images as image_url parts)."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise _bad(param, f"Invalid value for '{param}': expected a string or a list of parts.")
    out: list[dict[str, Any]] = []
    for i, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            out.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and part.get("image_url"):
            out.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise _bad(f"{param}.{i}", f"Unsupported content part type {kind!r}.")
    if all(p["type"] == "text" for p in out):
        return "".join(p["text"] for p in out) if len(out) == 1 else out
    return out


def input_messages(items: Any) -> list[dict[str, Any]]:
    """`input` (a string or a list of items) as chat messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise _bad("input", "Invalid value for 'input': expected a string or a non-empty list.")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _bad(f"input.{i}", f"Invalid value for 'input.{i}': expected an object.")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise _bad(f"input.{i}.role", f"Invalid value for 'input.{i}.role': {role!r}.")
            messages.append(
                {"role": role, "content": _content(item.get("content"), f"input.{i}.content")}
            )
        elif kind == "function_call":
            name, namespace = str(item.get("name", "")), item.get("namespace")
            call = {
                "id": str(item.get("call_id") or item.get("id") or f"call_{i}"),
                "type": "function",
                "function": {
                    "name": f"{namespace}{NS_SEP}{name}" if namespace else name,
                    "arguments": str(item.get("arguments", "")),
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)  # parallel calls are one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item.get("call_id", "")),
                    "content": output if isinstance(output, str) else orjson.dumps(output).decode(),
                }
            )
        elif kind == "reasoning":
            continue  # a model's reasoning summary: not part of the conversation it continues
        else:
            raise _bad(f"input.{i}.type", f"Unsupported input item type {kind!r}.")
    return messages


def _function(tool: Any, param: str, namespace: str = "") -> dict[str, Any]:
    """A Responses function tool (a namespace's, flattened) as a chat function tool."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise _bad(
            f"{param}.type",
            f"Only function tools and namespaces of them can be sent to a chat-completions "
            f"upstream, not {kind!r} ({param}).",
        )
    fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    if namespace:
        fn["name"] = f"{namespace}{NS_SEP}{fn.get('name', '')}"
    return {"type": "function", "function": fn}


def untranslatable(body: dict[str, Any]) -> ApiError | None:
    """The 400 for the first thing of a Responses request the chat form cannot carry: a
    parameter chat has no word for (`conversation`, `prompt`, `max_tool_calls`, or one this
    gateway does not know), or a tool only the provider itself runs (`web_search`, `custom`).
    An upstream that serves the Responses API gets the request as sent; a translated one
    answers this rather than drop it."""
    for name in body:
        if name not in _READ and name not in _IGNORED and name not in _SAMPLING:
            return _bad(
                name,
                f"Unsupported parameter: '{name}' cannot be sent to a chat-completions "
                "upstream (only to one that serves the Responses API).",
            )
    if body.get("background"):
        return _bad("background", "A background response cannot be made on a chat upstream.")
    return hosted_tool(body)


def not_carried(body: dict[str, Any]) -> list[str]:
    """What a translated request leaves out that asks for a way of answering (a reasoning
    effort or summary, a verbosity): named in `x-flywheel-not-carried`, never silently."""
    out = []
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and any(reasoning.get(k) for k in ("effort", "summary")):
        out.append("reasoning")
    text = body.get("text")
    if isinstance(text, dict) and text.get("verbosity"):
        out.append("text.verbosity")
    return out


def hosted_tool(body: dict[str, Any]) -> ApiError | None:
    """The 400 for the first tool only the provider itself can run (`web_search`, `custom`,
    ...), which the chat form cannot carry."""
    tools = body.get("tools")
    try:
        _tools(tools if isinstance(tools, list) else [])
    except ApiError as e:
        return e
    return None


def _tool(i: int, tool: Any) -> list[dict[str, Any]]:
    """The chat functions of `tools[i]` (a namespace gives several); raises what chat
    cannot carry."""
    if not (isinstance(tool, dict) and tool.get("type") == "namespace"):
        return [_function(tool, f"tools.{i}")]
    name, group = tool.get("name"), tool.get("tools")
    if not isinstance(name, str) or not name:
        raise _bad(
            f"tools.{i}.name", f"Invalid value for 'tools.{i}.name': a namespace needs a name."
        )
    if not isinstance(group, list):
        raise _bad(f"tools.{i}.tools", f"Invalid value for 'tools.{i}.tools': expected a list.")
    return [_function(t, f"tools.{i}.tools.{j}", name) for j, t in enumerate(group)]


def _tools(tools: Any, lenient: bool = False) -> list[dict[str, Any]]:
    """The chat form of `tools`; `lenient`: a tool chat cannot carry is left out (the
    request's chat copy, for its row and rails, when it passes through natively)."""
    if not isinstance(tools, list):
        raise _bad("tools", "Invalid value for 'tools': expected a list.")
    out = []
    for i, tool in enumerate(tools):
        try:
            out += _tool(i, tool)
        except ApiError:
            if not lenient:
                raise
    return out


def namespaces_of(body: dict[str, Any]) -> frozenset[str]:
    """The tool namespaces a Responses request declared."""
    tools = body.get("tools")
    return frozenset(
        str(t["name"])
        for t in (tools if isinstance(tools, list) else [])
        if isinstance(t, dict) and t.get("type") == "namespace" and t.get("name")
    )


def split_name(name: str, namespaces: frozenset[str]) -> tuple[str, str]:
    """(namespace, name) of a chat tool call's name: the declared namespace it was flattened
    from (longest first), or ("", name)."""
    for ns in sorted(namespaces, key=len, reverse=True):
        if name.startswith(ns + NS_SEP):
            return ns, name[len(ns) + len(NS_SEP) :]
    return "", name


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    raise _bad("text.format.type", f"Unsupported text format {fmt['type']!r}.")


def to_chat(
    body: dict[str, Any], history: list[dict[str, Any]] | None = None, lenient: bool = False
) -> dict[str, Any]:
    """The chat request a Responses request asks; `history` is the conversation of
    `previous_response_id` (its messages and answer), resolved by the caller. `lenient`:
    tools only the provider can run are left out (see `hosted_tool`), for a caller that
    checks them where the upstream is known."""
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    messages += [m for m in history or [] if m.get("role") not in ("system", "developer")]
    messages += input_messages(body.get("input"))
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for name in _SAMPLING:
        if name in body:
            chat[name] = body[name]
    if "max_output_tokens" in body:
        chat["max_tokens"] = body["max_output_tokens"]
    if "tools" in body:
        chat["tools"] = _tools(body["tools"], lenient)
    if "tool_choice" in body:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    for name in ("metadata", "tags", "flywheel_metadata", "flywheel_tags"):
        if name in body:
            chat[name] = body[name]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# --- answers -----------------------------------------------------------------------------


def response_id(request_id: str) -> str:
    return "resp_" + request_id.replace("-", "")


def request_id_of(resp_id: str) -> str | None:
    """The gateway request id behind a `resp_...` id this gateway issued."""
    raw = resp_id.removeprefix("resp_")
    if len(raw) != 32 or not all(c in "0123456789abcdef" for c in raw):
        return None
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def usage_of(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    i, o = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return {
        "input_tokens": i,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": o,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": i + o,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def call_item(
    call: dict[str, Any], status: str = "completed", namespaces: frozenset[str] = frozenset()
) -> dict[str, Any]:
    fn = call.get("function") or {}
    namespace, name = split_name(str(fn.get("name", "")), namespaces)
    item = {
        "type": "function_call",
        "id": "fc_" + str(call.get("id", "")),
        "call_id": str(call.get("id", "")),
        "name": name,
        "arguments": str(fn.get("arguments", "")),
        "status": status,
    }
    if namespace:
        item["namespace"] = namespace
    return item


def envelope(
    rid: str, body: dict[str, Any], status: str, output: list[dict[str, Any]], usage: Any
) -> dict[str, Any]:
    text_format = (
        (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    )
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body.get("model"),
        "output": output,
        "usage": usage,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "text": {"format": text_format or {"type": "text"}},
        "previous_response_id": body.get("previous_response_id"),
    }


def from_chat(answer: dict[str, Any], body: dict[str, Any], request_id: str) -> dict[str, Any]:
    """A chat completion as the Responses object for `body`."""
    rid = response_id(request_id)
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("content"):
        output.append(message_item("msg_" + rid[5:], str(message["content"])))
    spaces = namespaces_of(body)
    output += [call_item(c, namespaces=spaces) for c in message.get("tool_calls") or []]
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    out = envelope(rid, body, status, output, usage_of(answer.get("usage")))
    if status == "incomplete":
        out["incomplete_details"] = {"reason": "max_output_tokens"}
    return out
