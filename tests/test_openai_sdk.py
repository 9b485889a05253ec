"""The official `openai` SDK against the gateway, and the rows each call leaves in ClickHouse."""

from __future__ import annotations

import uuid
from decimal import Decimal

import openai
import pytest

from contracts.pricing import litellm_price_table
from tests.support.gateway import APP_KEY, RunningGateway


def _client(gw: RunningGateway, key: str = APP_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def _row(gw: RunningGateway, request_id: str) -> dict:
    return gw.row(request_id)


def _gpt4o_cost(tokens_in: int, tokens_out: int) -> Decimal:
    entry = litellm_price_table()["gpt-4o"]
    return (
        Decimal(str(entry["input_cost_per_token"])) * tokens_in
        + Decimal(str(entry["output_cost_per_token"])) * tokens_out
    )


def test_chat_plain_logs_tokens_and_cost(gateway: RunningGateway) -> None:
    client = _client(gateway)
    resp = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
        temperature=0.2,
        extra_body={"metadata": {"ticket": "T-1"}, "tags": ["smoke"]},
    )
    completion = resp.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert resp.headers["x-request-id"] == completion.id
    uuid.UUID(completion.id)

    row = _row(gateway, completion.id)
    assert row["app"] == "shop" and row["team"] == "retail" and row["key_id"] == "shop-key"
    assert row["consent"] is True
    assert row["route"] == "support" and row["served_model"] == "teacher"
    assert row["status"] == "ok" and row["http_status"] == 200
    assert row["input_tokens"] == completion.usage.prompt_tokens
    assert row["output_tokens"] == completion.usage.completion_tokens
    expected = _gpt4o_cost(row["input_tokens"], row["output_tokens"])
    assert row["cost_usd"] == expected and row["baseline_cost_usd"] == expected
    assert row["metadata"] == {"ticket": "T-1"} and row["tags"] == ["smoke"]
    assert '"temperature":0.2' in row["params"]
    assert "hello there" in row["messages"] and "echo: hello there" in row["response"]


def test_chat_stream_without_usage_request(gateway: RunningGateway) -> None:
    client = _client(gateway)
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "one two three"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert all(c.usage is None for c in chunks), "usage chunk must be dropped when not asked"
    request_id = chunks[0].id
    assert all(c.id == request_id for c in chunks)
    row = _row(gateway, request_id)
    assert row["is_stream"] is True and row["status"] == "ok"
    assert row["output_tokens"] == 4 and row["input_tokens"] > 0
    assert row["usage_estimated"] is False
    assert row["ttft_us"] > 0 and row["ttft_us"] <= row["latency_us"]
    assert "echo: one two three" in row["response"]


def test_chat_stream_with_include_usage(gateway: RunningGateway) -> None:
    client = _client(gateway)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "count me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 3
    row = _row(gateway, chunks[0].id)
    assert row["output_tokens"] == usage.completion_tokens
    assert row["cost_usd"] == _gpt4o_cost(usage.prompt_tokens, usage.completion_tokens)


async def test_async_client_plain_and_stream(gateway: RunningGateway) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
    plain = await client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "async hi"}]
    )
    assert plain.choices[0].message.content == "echo: async hi"
    stream = await client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "async stream"}], stream=True
    )
    ids = {chunk.id async for chunk in stream}
    assert len(ids) == 1
    for request_id in (plain.id, ids.pop()):
        assert _row(gateway, request_id)["status"] == "ok"
    await client.close()


def test_tools_n_stop_and_response_format_pass_through(gateway: RunningGateway, upstream) -> None:
    client = _client(gateway)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    resp = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "find shoes [[tool]]"}],
        tools=tools,
        tool_choice="auto",
        n=2,
        stop=["\n"],
        response_format={"type": "json_object"},
        seed=7,
    )
    sent = upstream.fake.requests[-1]
    assert sent["model"] == "gpt-4o" and sent["n"] == 2 and sent["stop"] == ["\n"]
    assert sent["response_format"] == {"type": "json_object"} and sent["seed"] == 7
    assert "metadata" not in sent and "tags" not in sent
    assert len(resp.choices) == 2
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and resp.choices[0].finish_reason == "tool_calls"
    row = _row(gateway, resp.id)
    assert row["finish_reason"] == "tool_calls" and '"lookup"' in row["response"]


def test_streamed_tool_call_is_assembled_in_the_log(gateway: RunningGateway) -> None:
    client = _client(gateway)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "a b c d"}],
            stream=True,
            n=2,
        )
    )
    row = _row(gateway, chunks[0].id)
    assert row["response"].count("echo: a b c d") == 2


def test_completions_and_embeddings(gateway: RunningGateway) -> None:
    client = _client(gateway)
    comp = client.completions.create(model="cheap", prompt="legacy prompt")
    assert comp.choices[0].text == "echo: legacy prompt"
    row = _row(gateway, comp.id)
    assert row["endpoint"] == "completions" and row["served_model"] == "cheap"
    expected = (
        Decimal("0.10") * row["input_tokens"] + Decimal("0.20") * row["output_tokens"]
    ) / 10**6
    assert row["cost_usd"] == expected

    with_raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["a b", "c"]
    )
    emb = with_raw.parse()
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    row = _row(gateway, with_raw.headers["x-request-id"])
    assert row["endpoint"] == "embeddings" and row["input_tokens"] == 3
    assert row["response"] == '{"embeddings":2,"dimensions":8}'


def test_models_lists_callable_aliases(gateway: RunningGateway) -> None:
    ids = {m.id for m in _client(gateway).models.list()}
    assert {"gpt-4o", "support", "cheap", "text-embedding-3-small", "dead", "promoted"} <= ids
    assert "student-ok" not in ids, "candidates' serving models are not callable by name"


def test_consent_flag_follows_the_app(gateway: RunningGateway) -> None:
    from tests.support.gateway import OTHER_KEY

    resp = _client(gateway, OTHER_KEY).chat.completions.create(
        model="cheap", messages=[{"role": "user", "content": "no consent"}]
    )
    row = _row(gateway, resp.id)
    assert row["app"] == "intranet" and row["consent"] is False


def test_upstream_without_usage_is_estimated_not_zero(gateway: RunningGateway) -> None:
    resp = _client(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "quiet provider [[nousage]]"}]
    )
    row = _row(gateway, resp.id)
    assert row["usage_estimated"] is True
    assert row["input_tokens"] > 0 and row["cost_usd"] > 0


@pytest.mark.parametrize("score", [True, 0.25])
def test_feedback_lands_against_its_request(gateway: RunningGateway, score) -> None:
    import httpx

    resp = _client(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "rate me"}]
    )
    r = httpx.post(
        f"{gateway.base_url}/feedback",
        headers={"Authorization": f"Bearer {APP_KEY}"},
        json={"request_id": resp.id, "score": score, "tag": "helpful", "comment": "ok"},
    )
    assert r.status_code == 200, r.text
    rows = gateway.rows("SELECT * FROM feedback WHERE request_id = {id:UUID}", id=resp.id)
    assert len(rows) == 1
    assert rows[0]["score"] == float(score) and rows[0]["tag"] == "helpful"
