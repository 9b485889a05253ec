"""Property: no request body, however odd, gets a 5xx or an error that is not OpenAI-shaped,
and none stops logging (found before: deep nesting, odd `response_format`, wrong types)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway import APP_KEY, RunningGateway

pytestmark = pytest.mark.slow  # ~20 s of generated bodies: CI runs it, the fast subset not


def _dumps(value: Any) -> bytes:
    # The standard library writes any integer (orjson stops at 64 bits): clients may too.
    return json.dumps(value).encode()


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "robot"]) | _json},
    optional={"content": st.text(max_size=40) | _json, "name": _json, "tool_calls": _json},
)
_chat = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gpt-4o", "cheap", "no-such-model"]) | _json,
        "messages": st.lists(_message, max_size=3) | _json,
    },
    optional={
        name: _json
        for name in (
            "stream",
            "stream_options",
            "n",
            "response_format",
            "metadata",
            "tags",
            "temperature",
            "tools",
            "max_tokens",
            "logprobs",
        )
    },
)
_deep = st.integers(min_value=60, max_value=400).map(lambda d: "[" * d + "]" * d)
_bodies = st.one_of(
    _chat.map(_dumps),
    _json.map(_dumps),
    _deep.map(str.encode),
    st.binary(max_size=64),
)
_paths = st.sampled_from(["/chat/completions", "/completions", "/embeddings", "/feedback"])


def _assert_openai_error(r: httpx.Response) -> None:
    body: Any = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    assert "Traceback" not in err["message"]


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=_paths, body=_bodies)
def test_no_body_gets_a_5xx_or_a_foreign_error(
    gateway: RunningGateway, path: str, body: bytes
) -> None:
    r = httpx.post(
        gateway.base_url + path,
        content=body,
        headers={"Authorization": f"Bearer {APP_KEY}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        _assert_openai_error(r)


def test_logging_goes_on_after_the_fuzz(gateway: RunningGateway) -> None:
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "after the fuzz"}]},
        headers={"Authorization": f"Bearer {APP_KEY}"},
        timeout=30,
    )
    assert r.status_code == 200
    assert gateway.row(r.json()["id"])["status"] == "ok"
    assert gateway.state.writer.backlog_rows() == 0
