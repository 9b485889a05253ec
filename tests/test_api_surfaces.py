"""Clients that only swap their base URL: the Responses API and Anthropic's Messages API
through the real SDKs, each a row in the one chat form the distiller reads."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from distiller.curation import curate
from tests.support.clients import TOOLS, anthropic_client, openai_client, request_id_of
from tests.support.gateway import (
    ADMIN_KEY,
    APP_KEY,
    FINANCE_KEY,
    OTHER_KEY,
    RunningGateway,
)


def test_responses_plain_and_streamed_are_rows(gateway: RunningGateway, upstream) -> None:
    client = openai_client(gateway)
    resp = client.responses.create(
        model="gpt-4o", input="where is parcel 7301", instructions="You are a courier desk."
    )
    assert resp.output_text == "echo: where is parcel 7301"
    assert resp.usage is not None and resp.usage.output_tokens > 0
    sent = upstream.fake.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "You are a courier desk."}
    row = gateway.row(request_id_of(resp.id))
    assert row["api"] == "responses" and row["endpoint"] == "chat.completions"
    assert row["input_tokens"] == resp.usage.input_tokens and row["cost_usd"] > 0
    assert json.loads(row["messages"])[-1]["content"] == "where is parcel 7301"

    events = list(client.responses.create(model="gpt-4o", input="stream parcel 7302", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == "echo: stream parcel 7302" and final.usage.output_tokens > 0
    row = gateway.row(request_id_of(final.id))
    assert row["api"] == "responses" and row["is_stream"] and row["output_tokens"] > 0
    # The distiller reads them as chat examples of their route.
    ids = {e.request_id for e in curate(gateway.state.store, "support").examples}
    assert {request_id_of(resp.id), request_id_of(final.id)} <= ids


def test_responses_tools_previous_response_and_structured_output(
    gateway: RunningGateway, upstream
) -> None:
    client = openai_client(gateway)
    first = client.responses.create(model="gpt-4o", input="order 88 [[tool]]", tools=TOOLS)  # type: ignore[arg-type]
    call = first.output[0]
    assert call.type == "function_call" and call.name == "lookup"
    assert json.loads(call.arguments) == {"q": "order 88"}
    follow = client.responses.create(
        model="gpt-4o",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "shipped"}],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert follow.output  # the fake answers the last user turn again
    sent = upstream.fake.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "lookup"
    with client.responses.stream(model="gpt-4o", input="order 89 [[tool]]", tools=TOOLS) as s:  # type: ignore[arg-type]
        streamed = s.get_final_response()
    assert streamed.output[0].type == "function_call"
    assert json.loads(streamed.output[0].arguments) == {"q": "order 89"}  # type: ignore[union-attr]

    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    client.responses.create(
        model="gpt-4o",
        input="structured 90",
        text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
    )
    assert upstream.fake.requests[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="gpt-4o", previous_response_id="resp_nope", input="x")
    assert bad.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="gpt-4o", input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert bad.value.body["param"] == "tools.0.type"  # type: ignore[index]


# What Codex sends for its MCP and collaboration tools: functions grouped in a namespace.
NAMESPACED = [
    {
        "type": "namespace",
        "name": "collaboration",
        "description": "Work with other agents.",
        "tools": [
            {
                "type": "function",
                "name": "spawn_agent",
                "description": "Spawns an agent.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
            {"type": "function", "name": "send_message", "parameters": {"type": "object"}},
        ],
    },
    TOOLS[0],
]


def test_responses_namespace_tools_are_flattened_and_mapped_back(
    gateway: RunningGateway, upstream
) -> None:
    """A chat upstream has no namespaces: their functions go up as `<namespace>__<name>`,
    and a call of one comes back as Responses writes it (`name` and `namespace`), in a
    plain answer, a stream, and the next turn's input."""
    client = openai_client(gateway)
    first = client.responses.create(model="gpt-4o", input="task 5 [[tool]]", tools=NAMESPACED)  # type: ignore[arg-type]
    sent = upstream.fake.requests[-1]["tools"]
    assert [t["function"]["name"] for t in sent] == [
        "collaboration__spawn_agent",
        "collaboration__send_message",
        "lookup",
    ]
    assert sent[0]["function"]["description"] == "Spawns an agent."
    call = first.output[0].model_dump()
    assert (call["type"], call["name"], call["namespace"]) == (
        "function_call",
        "spawn_agent",
        "collaboration",
    )
    assert json.loads(call["arguments"]) == {"q": "task 5"}
    # The agent sends the call back as it got it, with its output: chat sees its flat name.
    client.responses.create(
        model="gpt-4o",
        input=[
            {"role": "user", "content": "task 5 [[tool]]"},
            {k: call[k] for k in ("type", "call_id", "name", "namespace", "arguments")},
            {"type": "function_call_output", "call_id": call["call_id"], "output": "spawned"},
        ],
        tools=NAMESPACED,  # type: ignore[arg-type]
    )
    turns = upstream.fake.requests[-1]["messages"]
    assert turns[1]["tool_calls"][0]["function"]["name"] == "collaboration__spawn_agent"
    with client.responses.stream(model="gpt-4o", input="task 6 [[tool]]", tools=NAMESPACED) as s:  # type: ignore[arg-type]
        events = list(s)
        streamed = s.get_final_response()
    added = [e.item.model_dump() for e in events if e.type == "response.output_item.added"]
    assert added[0]["name"] == "spawn_agent" and added[0]["namespace"] == "collaboration"
    done = streamed.output[0].model_dump()
    assert (done["name"], done["namespace"]) == ("spawn_agent", "collaboration")
    # A plain function named like a flattened one is left alone (no such namespace declared).
    plain = [{**TOOLS[0], "name": "collaboration__spawn_agent"}]
    out = client.responses.create(model="gpt-4o", input="task 7 [[tool]]", tools=plain)  # type: ignore[arg-type]
    assert out.output[0].model_dump().get("namespace") is None
    assert out.output[0].name == "collaboration__spawn_agent"  # type: ignore[union-attr]
    # What chat cannot express inside a namespace is a 400 naming it, not a silent drop.
    custom = [{**NAMESPACED[0], "tools": [{"type": "custom", "name": "apply_patch"}]}]
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="gpt-4o", input="x", tools=custom)  # type: ignore[arg-type]
    assert bad.value.body["param"] == "tools.0.tools.0.type"  # type: ignore[index]
    assert "'custom'" in bad.value.body["message"]  # type: ignore[index]


def test_langchain_responses_api(gateway: RunningGateway) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="gpt-4o",
        base_url=gateway.base_url,
        api_key=APP_KEY,  # type: ignore[arg-type]
        use_responses_api=True,
        max_retries=0,
    )
    answer = llm.invoke("langchain parcel 7501")
    assert "echo: langchain parcel 7501" in str(answer.content)


def test_models_per_key_and_retrieve(gateway: RunningGateway) -> None:
    shop = {m.id for m in openai_client(gateway).models.list()}
    intranet = {m.id for m in openai_client(gateway, OTHER_KEY).models.list()}
    assert "intranet-model" in intranet and "intranet-model" not in shop
    assert "gpt-4o" in shop and "gpt-4o" in intranet
    assert openai_client(gateway).models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        openai_client(gateway).models.retrieve("intranet-model")


def test_dashboard_roles_get_403_on_every_model_api(gateway: RunningGateway) -> None:
    for key in (ADMIN_KEY, FINANCE_KEY):
        with pytest.raises(openai.PermissionDeniedError):
            openai_client(gateway, key).responses.create(model="gpt-4o", input="x")
        with pytest.raises(openai.PermissionDeniedError):
            openai_client(gateway, key).models.list()
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            anthropic_client(gateway, key).messages.create(
                model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


def test_rate_limit_headers_and_retry_after_honoured_by_the_sdk(gateway: RunningGateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=OTHER_KEY, max_retries=0)
    body = {"model": "paced", "messages": [{"role": "user", "content": "paced"}]}
    raw = client.chat.completions.with_raw_response.create(**body)  # type: ignore[call-overload]
    assert raw.headers["x-ratelimit-limit-requests"] == "30"
    remaining = int(raw.headers["x-ratelimit-remaining-requests"])
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    limited = None
    for _ in range(remaining + 20):  # the bucket refills one request every 2 s meanwhile
        try:
            client.chat.completions.create(**body)  # type: ignore[call-overload]
        except openai.RateLimitError as e:
            limited = e
            break
    assert limited is not None, "30 requests a minute were never enforced"
    assert int(limited.response.headers["retry-after"]) >= 1
    assert limited.response.headers["x-ratelimit-remaining-requests"] == "0"
    # The SDK's own retry waits what Retry-After says, and then gets through.
    patient = openai.OpenAI(base_url=gateway.base_url, api_key=OTHER_KEY, max_retries=2)
    assert patient.chat.completions.create(**body).choices  # type: ignore[call-overload]


def test_answers_say_who_served_them(gateway: RunningGateway) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="promoted", messages=[{"role": "user", "content": "who serves 7601"}]
    )
    assert raw.headers["x-flywheel-served-by"] == "student"
    assert raw.headers["x-flywheel-model"].startswith("student-")
    raw = openai_client(gateway).responses.with_raw_response.create(
        model="gpt-4o", input="who 7602"
    )
    assert raw.headers["x-flywheel-served-by"] == "teacher"


def test_openai_metadata_is_forwarded_and_gateway_fields_are_not(
    gateway: RunningGateway, upstream
) -> None:
    resp = openai_client(gateway).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "metadata 7701"}],
        metadata={"order": "7701"},
        extra_body={"flywheel_tags": ["vip"], "flywheel_metadata": {"tier": "gold"}},
    )
    sent = upstream.fake.requests[-1]
    assert sent["metadata"] == {"order": "7701"}
    assert "flywheel_tags" not in sent and "flywheel_metadata" not in sent
    row = gateway.row(resp.id)
    assert row["metadata"] == {"order": "7701", "tier": "gold"} and row["tags"] == ["vip"]


def test_an_abandoned_stream_is_priced(gateway: RunningGateway) -> None:
    body = {
        "model": "gpt-4o",
        "stream": True,
        "messages": [{"role": "user", "content": "a b c d e f g h i j [[drip:0.2]]"}],
    }
    headers = {"Authorization": f"Bearer {APP_KEY}"}
    with httpx.stream(
        "POST", f"{gateway.base_url}/chat/completions", json=body, headers=headers
    ) as r:
        request_id = r.headers["x-request-id"]
        chunks = r.iter_bytes()
        next(chunks)
        next(chunks)
    row = gateway.row(request_id)
    assert row["status"] == "client_disconnect"
    assert row["output_tokens"] > 0 and row["cost_usd"] > 0 and row["usage_estimated"] is True


def test_cors_preflight(gateway: RunningGateway) -> None:
    from tests.support.gateway import CORS_ORIGIN

    url = f"{gateway.base_url}/chat/completions"
    ok = httpx.options(
        url,
        headers={
            "Origin": CORS_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == CORS_ORIGIN
    # What the official JS SDKs send from a browser (openai's, then anthropic's).
    for sent in (
        "authorization, content-type, x-stainless-lang, x-stainless-package-version, "
        "x-stainless-os, x-stainless-arch, x-stainless-runtime, x-stainless-runtime-version, "
        "x-stainless-retry-count, x-stainless-timeout",
        "x-api-key, content-type, anthropic-version, anthropic-beta, "
        "anthropic-dangerous-direct-browser-access, x-stainless-helper-method, "
        "x-stainless-retry-count",
    ):
        sdk = httpx.options(
            url,
            headers={
                "Origin": CORS_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": sent,
            },
        )
        assert sdk.status_code == 200, sdk.text
    other = httpx.options(
        url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in other.headers
    answer = openai_client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "cors 7801"}],
        extra_headers={"Origin": CORS_ORIGIN},
    )
    assert answer.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "x-flywheel-served-by" in answer.headers["access-control-expose-headers"]


def test_upstream_param_code_and_retry_after_reach_the_client(gateway: RunningGateway) -> None:
    client = openai_client(gateway)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x [[status:400]]"}]
        )
    assert bad.value.body["param"] == "messages"  # type: ignore[index]
    assert bad.value.body["code"] == "fake_invalid_messages"  # type: ignore[index]
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x [[status:429]]"}]
        )
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_responses_pass_through_to_an_upstream_that_serves_them(
    gateway: RunningGateway, upstream
) -> None:
    client = openai_client(gateway)
    raw = client.responses.with_raw_response.create(model="native-responses", input="parcel 7901")
    first = raw.parse()
    assert first.id.startswith("resp_native_"), "the upstream's own object, untouched"
    assert first.output_text == "native: parcel 7901"
    sent = upstream.fake.requests[-1]
    assert sent["input"] == "parcel 7901" and sent["model"] == "gpt-4o" and "messages" not in sent
    row = gateway.row(raw.headers["x-request-id"])
    assert row["api"] == "responses" and row["served_model"] == "native-responses"
    assert row["input_tokens"] == first.usage.input_tokens  # type: ignore[union-attr]
    assert "native: parcel 7901" in row["response"] and row["cost_usd"] > 0
    # The upstream keeps the conversation: its id goes back to it.
    follow = client.responses.create(
        model="native-responses", input="and then", previous_response_id=first.id
    )
    assert follow.output_text == f"native: and then (after {first.id})"
    events = list(
        client.responses.create(model="native-responses", input="parcel 7902", stream=True)
    )
    assert events[-1].type == "response.completed"
    assert events[-1].response.id.startswith("resp_native_")  # type: ignore[union-attr]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = gateway.rows_eventually(
        "SELECT output_tokens, response FROM requests WHERE api = 'responses'"
        " AND position(response, 'parcel 7902') > 0",
        1,
    )
    assert streamed[0]["output_tokens"] > 0
    # A tool only the provider runs (Codex sends `web_search` by default) goes to it as sent,
    # namespaces too; translated for a chat upstream, the same request is a 400 naming it.
    tools = [*NAMESPACED, {"type": "web_search", "external_web_access": False}]
    hosted = client.responses.create(model="native-responses", input="parcel 7903", tools=tools)  # type: ignore[arg-type]
    assert hosted.output_text == "native: parcel 7903"
    assert upstream.fake.requests[-1]["tools"] == tools
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="gpt-4o", input="parcel 7903", tools=tools)  # type: ignore[arg-type]
    assert bad.value.body["param"] == "tools.2.type"  # type: ignore[index]
    assert "'web_search'" in bad.value.body["message"]  # type: ignore[index]


def test_the_upstreams_rate_limit_headers_are_relayed_where_the_gateway_has_none(
    gateway: RunningGateway,
) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "relay 8601"}]
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"  # the upstream's
    raw = openai_client(gateway).chat.completions.with_raw_response.create(  # its own bucket
        model="paced", messages=[{"role": "user", "content": "relay 8602"}]
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "30"  # the gateway's own
