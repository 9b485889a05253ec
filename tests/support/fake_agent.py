"""The coding model stand-in: what a model does with a task that needs one shell command.

On a request whose user turn carries `[[agent]]`: with no tool result in the conversation
yet, it calls the client's shell tool (Codex's `exec_command`, Claude Code's `Bash`, or a
`shell` function) to run `echo flywheel-$((6*7))`; once a result is there, it answers
`done: <the result>`. Only a command that really ran in a shell prints `flywheel-42`, so an
answer holding it proves the call went out to the agent and its result came back.
"""

from __future__ import annotations

from typing import Any

COMMAND = "echo flywheel-$((6*7))"
# The shell tools agents declare, and the argument that holds the command line.
SHELLS = {"exec_command": "cmd", "Bash": "command", "shell": "command"}


def _joined(content: Any) -> str | None:
    """A tool result's text: a string, or its text blocks joined (None: no result)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return None if content is None else str(content)


def _step(tool_names: list[str], result: str | None) -> tuple[str, str, dict[str, Any]]:
    """("call", tool, arguments) or ("say", text, {})."""
    if result is not None:
        return "say", f"done: {result.strip()}", {}
    for name in tool_names:
        if name in SHELLS:
            return "call", name, {SHELLS[name]: COMMAND}
    return "say", "no shell tool was offered", {}


def chat_step(body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The next step for a chat request (the gateway's translated path)."""
    names = [str((t.get("function") or {}).get("name", "")) for t in body.get("tools") or []]
    results = [m for m in body.get("messages") or [] if m.get("role") == "tool"]
    return _step(names, _joined(results[-1].get("content")) if results else None)


def responses_step(body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The next step for a Responses request (an upstream serving that API natively)."""
    names = [str(t.get("name", "")) for t in body.get("tools") or [] if isinstance(t, dict)]
    items = body.get("input") if isinstance(body.get("input"), list) else []
    outputs = [i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]
    return _step(names, _joined(outputs[-1].get("output")) if outputs else None)


def messages_step(body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The next step for an Anthropic Messages request (an Anthropic upstream, natively)."""
    names = [str(t.get("name", "")) for t in body.get("tools") or [] if isinstance(t, dict)]
    result = None
    for m in body.get("messages") or []:
        for block in m.get("content") if isinstance(m.get("content"), list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                if isinstance(content, list):
                    content = "".join(
                        str(p.get("text", "")) for p in content if isinstance(p, dict)
                    )
                result = str(content or "")
    return _step(names, result)


def user_texts(body: dict[str, Any]) -> str:
    """Every user text of a Messages (or chat) request, joined (to find the mark)."""
    out = []
    for m in body.get("messages") or []:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [str(b.get("text", "")) for b in content if isinstance(b, dict)]
    return "\n".join(out)


def asks(text: str) -> bool:
    return "[[agent]]" in text


def input_texts(body: dict[str, Any]) -> str:
    """Every text of a Responses request's input, joined (to find the mark)."""
    items = body.get("input")
    if isinstance(items, str):
        return items
    out = []
    for item in items if isinstance(items, list) else []:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [str(p.get("text", "")) for p in content if isinstance(p, dict)]
    return "\n".join(out)
