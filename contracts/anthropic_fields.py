"""What each top-level field of an Anthropic Messages request becomes on the translated path
(a chat-completions upstream), in one table.

- carried: `anthropic_shapes.to_chat` expresses it in the chat request;
- declared: it asks for a way of answering a chat upstream has no word for, and leaving it
  out changes what is asked but not what the answer must be (an effort or thinking
  preference, a sampling knob): not sent, and named in the answer's `x-flywheel-not-carried`
  header and the row's params, never silently;
- refused: dropping it would change the answer (server-side context edits, MCP servers, a
  server tool): a 400 naming the field.

A field this table does not know is refused: a new API field is a 400 until it has a row.
The native path (an `anthropic/` upstream) gets every field as sent and reads none of this.

Invariant: pure functions of JSON values; every field of a request is in exactly one of the
three outcomes.
"""

from __future__ import annotations

from typing import Any, Literal

from contracts.errors import ApiError

Outcome = Literal["carried", "declared", "refused"]

FIELDS: dict[str, Outcome] = {
    "model": "carried",
    "max_tokens": "carried",
    "messages": "carried",
    "system": "carried",
    "temperature": "carried",
    "top_p": "carried",
    "stop_sequences": "carried",
    "metadata": "carried",  # its user_id as chat's `user`
    "tools": "carried",  # custom tools; a server tool is refused (`tool_problem`)
    "tool_choice": "carried",
    "stream": "carried",
    "output_config": "carried",  # `format` as `response_format`; `effort` declared
    "thinking": "carried",  # enabled: `reasoning_effort`; adaptive: declared; disabled: none
    "context_management": "carried",  # clearing thinking: nothing to clear; else refused
    "top_k": "declared",
    "service_tier": "declared",
    "container": "refused",
    "mcp_servers": "refused",
    # The gateway's own fields.
    "tags": "carried",
    "flywheel_metadata": "carried",
    "flywheel_tags": "carried",
}


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, code="invalid_value", param=param)


def reasoning_effort(thinking: Any) -> str | None:
    """Chat's `reasoning_effort` for `thinking: {type: enabled, budget_tokens: N}` (the
    budgets litellm maps the other way: 1,024 low, 2,048 medium, more high)."""
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    budget = budget if isinstance(budget, int) and not isinstance(budget, bool) else 0
    return "low" if budget <= 1024 else "medium" if budget <= 2048 else "high"


def tool_problem(tools: Any) -> ApiError | None:
    """A server tool (Anthropic runs it: web search, code execution, ...) cannot be sent to
    a chat upstream: custom tools have no `type` or `type: custom`."""
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in (None, "custom"):
            return _bad(
                f"tools.{i}.type",
                f"Server tool {kind!r} cannot be sent to a chat-completions upstream "
                "(only to an Anthropic one).",
            )
    return None


def untranslatable(body: dict[str, Any]) -> ApiError | None:
    """The 400 for the first field of `body` the chat form cannot carry, or None."""
    for name in body:
        outcome = FIELDS.get(name, "refused")
        if outcome == "refused":
            return _bad(
                name,
                f"'{name}' cannot be sent to a chat-completions upstream (only to an "
                "Anthropic one).",
            )
    edits = body.get("context_management")
    edits = edits.get("edits") if isinstance(edits, dict) else None
    for i, edit in enumerate(edits if isinstance(edits, list) else []):
        kind = str(edit.get("type", "")) if isinstance(edit, dict) else ""
        if not kind.startswith("clear_thinking"):
            return _bad(
                f"context_management.edits.{i}.type",
                f"Context edit {kind!r} cannot be made for a chat-completions upstream.",
            )
    return tool_problem(body.get("tools"))


def not_carried(body: dict[str, Any]) -> list[str]:
    """The declared fields of `body` the chat request leaves out."""
    out = [name for name in body if FIELDS.get(name) == "declared"]
    output = body.get("output_config")
    if isinstance(output, dict) and "effort" in output:
        out.append("output_config.effort")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "adaptive":
        out.append("thinking")
    return out
