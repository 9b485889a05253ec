"""Session-safe routing: the turns of one agent session stay on whoever served its first
turn (`gateway/session_routing.py`), through the gateway with the real SDKs, on a route
whose canary candidate takes half of all requests."""

from __future__ import annotations

import json

from gateway.routing import RequestFacts
from gateway.session_routing import Pin, SessionPins, session_of
from tests.support.clients import anthropic_client, openai_client
from tests.support.gateway import RunningGateway


def _served(raw) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return raw.headers["x-flywheel-served-by"], raw.headers["x-flywheel-reason"]


def test_what_names_a_session() -> None:
    chat = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}
    header = session_of({"x-session-id": "abc"}, {}, chat)
    assert header is not None and header.explicit and header.source == "header x-session-id"
    claude = {"metadata": {"user_id": json.dumps({"device_id": "d", "session_id": "s-9"})}}
    found = session_of({}, claude, chat)
    assert found is not None and found.source == "metadata session_id"
    assert session_of({}, {"prompt_cache_key": "c-1"}, chat).source == "prompt_cache_key"  # type: ignore[union-attr]
    assert session_of({}, {}, chat, previous="k").key == "k"  # type: ignore[union-attr]
    # The opening of a conversation: only a continuation (an assistant turn) looks it up.
    first = session_of({}, {}, chat)
    later = session_of(
        {},
        {},
        {"messages": [*chat["messages"], {"role": "assistant", "content": "a"},
                      {"role": "user", "content": "more"}]},
    )  # fmt: skip
    assert first is not None and later is not None and first.key == later.key
    assert not first.explicit and later.explicit
    # Bounded: the least recently used session is forgotten first.
    pins = SessionPins(2, 60)
    for k in ("a", "b", "c"):
        pins.pin(k, Pin("teacher", ""), f"r-{k}")
    assert pins.get("a") is None and pins.get("c") == Pin("teacher", "")
    assert pins.session_of_response("r-c") == "c" and pins.session_of_response("r-a") == ""


def test_an_agent_session_stays_on_its_first_turns_model(gateway: RunningGateway) -> None:
    client = openai_client(gateway).with_options(max_retries=0)
    # Without a session, each request is drawn: both the canary and the teacher serve.
    drawn = {
        _served(
            client.chat.completions.with_raw_response.create(
                model="sessions", messages=[{"role": "user", "content": f"alone {i}"}]
            )
        )[0]
        for i in range(40)
    }
    assert drawn == {"student", "teacher"}
    firsts = set()
    for s in range(16):
        seen = []
        for turn in range(4):
            raw = client.chat.completions.with_raw_response.create(
                model="sessions",
                messages=[{"role": "user", "content": f"session {s} turn {turn}"}],
                extra_headers={"x-session-id": f"agent-{s}"},
            )
            seen.append(_served(raw))
        assert len({by for by, _ in seen}) == 1, seen
        assert all("session (header x-session-id)" in why for _, why in seen[1:]), seen
        firsts.add(seen[0][0])
    assert firsts == {"student", "teacher"}  # sessions are drawn; their turns are not


def test_claude_codes_session_and_a_continued_conversation_stick(
    gateway: RunningGateway,
) -> None:
    claude = anthropic_client(gateway)
    for s in range(6):
        user = json.dumps({"device_id": "d", "session_id": f"cc-{s}"})
        seen = {
            _served(
                claude.messages.with_raw_response.create(
                    model="sessions",
                    max_tokens=32,
                    metadata={"user_id": user},
                    messages=[{"role": "user", "content": f"claude {s} turn {t}"}],
                )
            )[0]
            for t in range(3)
        }
        assert len(seen) == 1
    # No id at all: a conversation's later turns (same opening) go where its first went.
    client = openai_client(gateway)
    for s in range(6):
        opening = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"open {s}"},
        ]
        first = _served(
            client.chat.completions.with_raw_response.create(model="sessions", messages=opening)
        )
        history = [*opening, {"role": "assistant", "content": "ok"}]
        for t in range(3):
            history.append({"role": "user", "content": f"next {t}"})
            by, why = _served(
                client.chat.completions.with_raw_response.create(model="sessions", messages=history)
            )
            assert by == first[0] and "session (conversation opening)" in why
            history.append({"role": "assistant", "content": "ok"})


def test_a_pinned_session_never_moves_to_a_student_and_leaves_one_that_stops(
    gateway: RunningGateway,
) -> None:
    router = gateway.state.router

    def facts(model: str) -> RequestFacts:
        return RequestFacts("bank", "retail", model, {}, {}, ())

    # Begun on the teacher: stays there though a student is promoted on the route now.
    kept = router.decide(facts("promoted"), Pin("teacher", ""), "header x-session-id")
    assert kept.primary.served_by == "teacher"
    assert kept.primary.reason == "session (header x-session-id): the teacher, as on its first turn"
    # Begun on a student that no longer serves (here in shadow): the teacher.
    gone = router.decide(facts("shadowed"), Pin("student", "ok"), "prompt_cache_key")
    assert gone.primary.served_by == "teacher"
    assert "its student ok no longer serves" in gone.primary.reason
    assert "sessions" in router.explain(facts("sessions"))
