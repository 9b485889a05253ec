"""Session-safe routing: the turns of one agent session stay on the model that served its
first turn, so an agent is not switched between models mid-task and the provider's prompt
cache of the session stays warm.

A session is named by the first of: the client's session header (`x-session-id`, Codex's
`session_id`, `x-claude-code-session-id`); a `session_id` inside an Anthropic
`metadata.user_id` (Claude Code sends one); a Responses `prompt_cache_key` (Codex sets it
to its session id); the session of a `previous_response_id` this gateway answered; else the
conversation's opening (its system prompt and first user turn, which a growing prefix
keeps), for a request that continues a conversation (it holds an assistant turn).

The first turn's decision is pinned: later turns go to the same teacher or candidate. A
teacher-pinned session never moves to a student mid-way (a student serves a session only
from its first turn); a student-pinned one goes to the teacher once that student no longer
serves. An unsure student's answer still escalates to the teacher for that turn: quality
comes before stickiness.

Invariant: per process and bounded (the `router.session_pins` most recent sessions, each
forgotten after `router.session_ttl_s` idle); a restart, or another worker, forgets a pin,
which costs at most one switch.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from contracts.openai_shapes import content_text
from contracts.states import ServedBy

# Headers agents name their session with, in the order they are trusted.
SESSION_HEADERS = ("x-session-id", "session_id", "x-claude-code-session-id")


@dataclass(frozen=True, slots=True)
class SessionKey:
    key: str
    source: str  # what named it, for the row's reason
    explicit: bool  # named by the client (every turn, the first too, looks it up)


@dataclass(frozen=True, slots=True)
class Pin:
    served_by: ServedBy  # teacher or student
    candidate: str  # the student's candidate ('' for the teacher)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _metadata_session(raw: dict[str, Any]) -> str:
    user = (raw.get("metadata") or {}).get("user_id") if isinstance(raw, dict) else None
    if not isinstance(user, str) or not user.startswith("{"):
        return ""
    try:
        found = orjson.loads(user)
    except orjson.JSONDecodeError:
        return ""
    return str(found.get("session_id") or "") if isinstance(found, dict) else ""


def session_of(
    headers: Mapping[str, str],
    raw: dict[str, Any],
    chat: dict[str, Any],
    previous: str = "",
    system_fingerprint: str = "",
) -> SessionKey | None:
    """The session a request belongs to (see the module doc), or None. `raw`: the body as
    the client sent it; `chat`: its chat form; `previous`: the session key of the
    `previous_response_id` it continues, when this gateway knows it; `system_fingerprint`:
    its system prompt's (`fingerprint_system_prompt`, already taken for routing)."""
    for name in SESSION_HEADERS:
        if headers.get(name):
            return SessionKey(_digest("h", headers[name]), f"header {name}", True)
    if found := _metadata_session(raw):
        return SessionKey(_digest("h", found), "metadata session_id", True)
    if isinstance(raw.get("prompt_cache_key"), str) and raw["prompt_cache_key"]:
        return SessionKey(_digest("h", raw["prompt_cache_key"]), "prompt_cache_key", True)
    if previous:
        return SessionKey(previous, "previous_response_id", True)
    messages = chat.get("messages")
    if not isinstance(messages, list):
        return None
    first = next((m for m in messages if m.get("role") == "user"), None)
    if first is None:
        return None
    continues = any(m.get("role") in ("assistant", "tool") for m in messages)
    opening = _digest("p", system_fingerprint, content_text(first.get("content")))
    return SessionKey(opening, "conversation opening", continues)


class SessionPins:
    """session key → the first turn's pin, least recently used first."""

    def __init__(self, capacity: int, ttl_s: float) -> None:
        self.capacity, self.ttl_s = capacity, ttl_s
        self._pins: OrderedDict[str, tuple[float, Pin]] = OrderedDict()
        self._by_response: OrderedDict[str, str] = OrderedDict()  # request id -> session

    def get(self, key: str) -> Pin | None:
        found = self._pins.get(key)
        if found is None:
            return None
        at, pin = found
        if time.monotonic() - at > self.ttl_s:
            del self._pins[key]
            return None
        self._pins[key] = (time.monotonic(), pin)
        self._pins.move_to_end(key)
        return pin

    def pin(self, key: str, pin: Pin, response_id: str = "") -> None:
        """Pin `key`; `response_id`: a Responses answer a later `previous_response_id` may
        name (only those are looked up by id)."""
        self._pins[key] = (time.monotonic(), pin)
        self._pins.move_to_end(key)
        if response_id:
            self._by_response[response_id] = key
            self._by_response.move_to_end(response_id)
        for table in (self._pins, self._by_response):
            while len(table) > self.capacity:
                table.popitem(last=False)

    def session_of_response(self, request_id: str) -> str:
        return self._by_response.get(request_id, "")
