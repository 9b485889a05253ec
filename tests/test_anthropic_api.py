"""Anthropic-SDK apps that only swap their base URL: the Messages API translated for an
OpenAI-compatible upstream, passed through to an Anthropic one."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anthropic
import orjson
import pytest

from contracts.pricing import litellm_price_table
from tests.support.clients import ANTHROPIC_TOOLS, anthropic_client, request_id_of
from tests.support.gateway import (
    RunningGateway,
    gateway_config,
    start_gateway,
    with_anthropic_route,
)


def test_anthropic_sdk_against_an_openai_compatible_upstream(
    gateway: RunningGateway, upstream
) -> None:
    client = anthropic_client(gateway)
    msg = client.messages.create(
        model="gpt-4o",
        max_tokens=64,
        system="You are a courier desk.",
        messages=[{"role": "user", "content": "parcel 7401"}],
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: parcel 7401"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    row = gateway.row(request_id_of(msg.id))
    assert row["api"] == "messages" and row["input_tokens"] == msg.usage.input_tokens
    with client.messages.stream(
        model="gpt-4o", max_tokens=64, messages=[{"role": "user", "content": "parcel 7402"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: parcel 7402" and final.usage.output_tokens > 0
    used = client.messages.create(
        model="gpt-4o",
        max_tokens=64,
        tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "parcel 7403 [[tool]]"}],
    )
    assert used.stop_reason == "tool_use" and used.content[0].type == "tool_use"
    assert used.content[0].input == {"q": "parcel 7403"}
    with client.messages.stream(
        model="gpt-4o",
        max_tokens=64,
        tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "parcel 7404 [[tool]]"}],
    ) as s:
        streamed = s.get_final_message()
    assert streamed.content[0].type == "tool_use" and streamed.stop_reason == "tool_use"
    # System turns inside `messages` (as Claude Code sends them) reach a chat upstream as
    # system messages in place.
    turns = [
        {"role": "user", "content": "parcel 7405"},
        {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
        {"role": "user", "content": "parcel 7406"},
    ]
    answered = client.messages.create(model="gpt-4o", max_tokens=64, messages=turns)  # type: ignore[arg-type]
    assert answered.content[0].text == "echo: parcel 7406"  # type: ignore[union-attr]
    chat = gateway.row(request_id_of(answered.id))
    assert orjson.loads(chat["messages"])[1] == {"role": "system", "content": "Be terse."}
    # A coding agent's 64,000-token budget is cut to the serving model's longest answer;
    # structured output (output_config.format) reaches a chat upstream as response_format.
    schema = {"type": "object", "properties": {"parcel": {"type": "string"}}}
    with client.messages.stream(  # the SDK streams a budget this large
        model="gpt-4o",
        max_tokens=64000,
        messages=[{"role": "user", "content": "parcel 7409"}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
    ) as s:
        s.get_final_message()
    sent = upstream.fake.requests[-1]
    longest = gateway.state.router.prices["teacher"].max_output_tokens
    assert longest and sent["max_tokens"] == longest < 64000
    assert sent["response_format"]["json_schema"]["schema"] == schema
    with pytest.raises(anthropic.BadRequestError) as unknown_format:
        client.messages.create(
            model="gpt-4o",
            max_tokens=64,
            messages=[{"role": "user", "content": "parcel 7410"}],
            extra_body={"output_config": {"format": {"type": "yaml"}}},
        )
    assert "output_config.format" in str(unknown_format.value.body)
    # Claude Code counts before each turn: an estimate, read like a request, never sent.
    counted = client.messages.count_tokens(
        model="gpt-4o",
        system="You are a courier desk.",
        messages=[{"role": "user", "content": "where is parcel 7407, sent on Monday?"}],
        tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
    )
    assert 10 < counted.input_tokens < 200, counted
    shorter = client.messages.count_tokens(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert shorter.input_tokens < counted.input_tokens
    with pytest.raises(anthropic.BadRequestError) as wrong:
        client.messages.count_tokens(
            model="gpt-4o",
            messages=[{"role": "wizard", "content": "x"}],  # type: ignore[list-item]
        )
    assert wrong.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(gateway, "sk-wrong").messages.count_tokens(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    # Not logged: a request sent after the counts is, and no count is.
    after = client.messages.create(
        model="gpt-4o", max_tokens=16, messages=[{"role": "user", "content": "parcel 7408"}]
    )
    assert gateway.row(request_id_of(after.id))["api"] == "messages"
    assert not gateway.rows(
        "SELECT request_id FROM requests WHERE position(messages, 'parcel 7407') > 0"
    )
    with pytest.raises(anthropic.AuthenticationError) as denied:
        anthropic_client(gateway, "sk-wrong").messages.create(
            model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="gpt-4o", max_tokens=0, messages=[])
    assert bad.value.body["type"] == "error"  # type: ignore[index]


@pytest.mark.slow
def test_anthropic_sdk_against_an_anthropic_upstream(
    tmp_path: Path, upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-fake")
    gw = start_gateway(
        with_anthropic_route(gateway_config(tmp_path, upstream.base_url), upstream.base_url)
    )
    try:
        client = anthropic_client(gw)
        system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
        raw = client.messages.with_raw_response.create(
            model="claude",
            max_tokens=64,
            system=system,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "hello claude"}],
        )
        msg = raw.parse()
        # Passed through: the upstream's own message, and it got the client's own body.
        assert msg.id == "msg_fake" and msg.content[0].text == "echo: hello claude"  # type: ignore[union-attr]
        sent = upstream.fake.requests[-1]
        assert sent["system"] == system and sent["model"] == "claude-sonnet-4-5"
        # Claude Code's shape: its betas in a header, system turns inside `messages`; the
        # upstream gets both as sent.
        turns = [
            {"role": "user", "content": "hello again"},
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "still there"},
        ]
        betas = "interleaved-thinking-2025-05-14,context-management-2025-06-27"
        again = client.messages.create(
            model="claude",
            max_tokens=64,
            messages=turns,  # type: ignore[arg-type]
            extra_headers={"anthropic-beta": betas},
        )
        assert again.content[0].text == "echo: still there"  # type: ignore[union-attr]
        assert upstream.fake.requests[-1]["messages"] == turns
        assert upstream.fake.anthropic_headers["anthropic-beta"] == betas
        assert upstream.fake.anthropic_headers["x-api-key"] == "sk-ant-fake"
        with client.messages.stream(
            model="claude", max_tokens=64, messages=[{"role": "user", "content": "stream claude"}]
        ) as s:
            assert "".join(s.text_stream) == "echo: stream claude"
            assert s.get_final_message().id == "msg_fake"
        used = client.messages.create(
            model="claude",
            max_tokens=64,
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "find it [[tool]]"}],
        )
        assert used.content[0].type == "tool_use" and used.content[0].name == "lookup"
        assert upstream.fake.requests[-1]["tools"] == ANTHROPIC_TOOLS  # as the client sent
        row = gw.row(raw.headers["x-request-id"])
        assert row["api"] == "messages" and row["served_model"] == "claude"
        assert "echo: hello claude" in row["response"] and row["input_tokens"] > 0
        assert row["cost_usd"] > 0
        # A prompt the provider read from its cache: Anthropic counts it apart from
        # input_tokens; the row counts every prompt token and bills the read at its rate.
        hit = client.messages.with_raw_response.create(
            model="claude",
            max_tokens=64,
            messages=[{"role": "user", "content": "hello again my old friend [[cached:3]]"}],
        )
        usage = hit.parse().usage
        assert usage.cache_read_input_tokens == 3
        cached_row = gw.row(hit.headers["x-request-id"])
        assert cached_row["input_tokens"] == usage.input_tokens + 3
        entry = litellm_price_table()["claude-sonnet-4-5"]
        assert cached_row["cost_usd"] == (
            Decimal(str(entry["input_cost_per_token"])) * usage.input_tokens
            + Decimal(str(entry["cache_read_input_token_cost"])) * 3
            + Decimal(str(entry["output_cost_per_token"])) * usage.output_tokens
        )
        with client.messages.stream(
            model="claude",
            max_tokens=64,
            messages=[{"role": "user", "content": "stream again my old friend [[cached:4]]"}],
        ) as s:
            final = s.get_final_message()
        assert final.usage.cache_read_input_tokens == 4
        streamed_cached = gw.rows_eventually(
            "SELECT input_tokens FROM requests WHERE position(response, 'stream again') > 0", 1
        )
        assert streamed_cached[0]["input_tokens"] == final.usage.input_tokens + 4
        streamed = gw.rows_eventually(
            "SELECT output_tokens FROM requests WHERE position(response, 'stream claude') > 0", 1
        )
        assert streamed[0]["output_tokens"] > 0
    finally:
        gw.stop()
