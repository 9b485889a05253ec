"""Each row of the Messages field table (`contracts/anthropic_fields.py`): carried into the
chat request, declared as left out (`x-flywheel-not-carried` and the row), or a 400 naming
the field; through the gateway with the anthropic SDK, on the translated path."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from contracts.anthropic_fields import FIELDS, not_carried, untranslatable
from contracts.anthropic_shapes import to_chat
from tests.support.clients import anthropic_client
from tests.support.gateway import RunningGateway

BASE: dict[str, Any] = {
    "model": "gpt-4o",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "fields 1"}],
}
# One example value per field of the table.
EXAMPLES: dict[str, Any] = {
    "model": "gpt-4o",
    "max_tokens": 64,
    "messages": BASE["messages"],
    "system": "Be brief.",
    "temperature": 0.2,
    "top_p": 0.9,
    "stop_sequences": ["END"],
    "metadata": {"user_id": "u-1"},
    "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "auto"},
    "stream": False,
    "output_config": {"effort": "high"},
    "thinking": {"type": "enabled", "budget_tokens": 4096},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "top_k": 5,
    "service_tier": "auto",
    "container": "container_1",
    "mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}],
    "tags": ["t"],
    "flywheel_metadata": {"k": "v"},
    "flywheel_tags": ["t"],
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_each_field_has_its_outcome(name: str) -> None:
    body = {**BASE, name: EXAMPLES[name]}
    refused = untranslatable(body)
    if FIELDS[name] == "refused":
        assert refused is not None and refused.param == name
        return
    assert refused is None, refused
    to_chat(body)  # carried or declared: translates
    assert (name in not_carried(body)) == (FIELDS[name] == "declared")


def test_what_the_chat_request_gets_of_thinking_and_effort() -> None:
    enabled = to_chat({**BASE, "thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert enabled["reasoning_effort"] == "low"
    assert (
        to_chat({**BASE, "thinking": {"type": "enabled", "budget_tokens": 16000}})[
            "reasoning_effort"
        ]
        == "high"
    )
    adaptive = {**BASE, "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}
    assert "reasoning_effort" not in to_chat(adaptive)
    assert not_carried(adaptive) == ["output_config.effort", "thinking"]
    assert not_carried({**BASE, "thinking": {"type": "disabled"}}) == []
    # Unknown fields and edits other than clearing thinking are refused, naming them.
    assert untranslatable({**BASE, "frobnicate": 1}).param == "frobnicate"  # type: ignore[union-attr]
    edits = {"edits": [{"type": "clear_tool_uses_20250919"}]}
    assert (
        untranslatable({**BASE, "context_management": edits}).param  # type: ignore[union-attr]
        == "context_management.edits.0.type"
    )
    server = [{"type": "web_search_20250305", "name": "web_search"}]
    assert untranslatable({**BASE, "tools": server}).param == "tools.0.type"  # type: ignore[union-attr]


def test_claude_codes_fields_on_the_translated_path(gateway: RunningGateway, upstream) -> None:
    """What Claude Code sends with every request: effort and adaptive thinking are declared
    left out (header and row), clearing thinking needs nothing; a refused field is a 400 in
    Anthropic's shape, and nothing goes upstream."""
    client = anthropic_client(gateway)
    raw = client.messages.with_raw_response.create(
        model="gpt-4o",
        max_tokens=64,
        messages=[{"role": "user", "content": "fields 2"}],
        extra_body={
            "thinking": {"type": "adaptive", "display": "omitted"},
            "context_management": EXAMPLES["context_management"],
            "output_config": {"effort": "high"},
        },
    )
    assert raw.parse().content[0].text == "echo: fields 2"  # type: ignore[union-attr]
    assert raw.headers["x-flywheel-not-carried"] == "output_config.effort, thinking"
    sent = upstream.fake.requests[-1]
    assert not {"thinking", "context_management", "output_config", "reasoning_effort"} & set(sent)
    row = gateway.row(raw.headers["x-request-id"])
    assert json.loads(row["params"])["flywheel_not_carried"] == ["output_config.effort", "thinking"]
    asked = len(upstream.fake.requests)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            model="gpt-4o",
            max_tokens=64,
            messages=[{"role": "user", "content": "fields 3"}],
            extra_body={"mcp_servers": EXAMPLES["mcp_servers"]},
        )
    assert bad.value.body["type"] == "error"  # type: ignore[index]
    assert "'mcp_servers'" in bad.value.body["error"]["message"]  # type: ignore[index]
    assert len(upstream.fake.requests) == asked
    # Nothing left out: no header.
    plain = client.messages.with_raw_response.create(
        model="gpt-4o", max_tokens=64, messages=[{"role": "user", "content": "fields 4"}]
    )
    assert "x-flywheel-not-carried" not in plain.headers
