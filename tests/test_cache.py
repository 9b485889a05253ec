"""The response cache: a repeated deterministic request is answered without an upstream
call, logged as the cache's (cost 0, the teacher's baseline), and never trained on."""

from __future__ import annotations

import time
from typing import Any

import openai

from distiller.curation import curate
from tests.support.gateway import APP_KEY, RunningGateway


def _ask(gw: RunningGateway, content: str, **extra: Any) -> Any:
    client = openai.OpenAI(base_url=gw.base_url, api_key=APP_KEY, max_retries=0)
    model = extra.pop("model", "cached")
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **extra
    )


def _calls(upstream: Any, content: str) -> int:
    return sum(
        1
        for body in upstream.fake.requests
        if any(m.get("content") == content for m in body.get("messages") or [])
    )


def test_a_repeated_request_is_answered_from_the_cache(gateway: RunningGateway, upstream) -> None:
    first = _ask(gateway, "cache me 8101", temperature=0)
    second = _ask(gateway, "cache me 8101", temperature=0)
    assert _calls(upstream, "cache me 8101") == 1
    assert second.headers["x-flywheel-served-by"] == "cache"
    a, b = first.parse(), second.parse()
    assert b.choices[0].message.content == a.choices[0].message.content and b.id != a.id
    row1, row2 = gateway.row(a.id), gateway.row(b.id)
    assert row2["served_by"] == "cache" and row2["cost_usd"] == 0
    assert row2["baseline_cost_usd"] == row1["cost_usd"] > 0  # the savings are the cache's
    # A differing parameter misses; so does a sampled request that did not opt in.
    _ask(gateway, "cache me 8101", temperature=0, max_tokens=20)
    assert _calls(upstream, "cache me 8101") == 2
    _ask(gateway, "cache me 8102", temperature=0.7)
    _ask(gateway, "cache me 8102", temperature=0.7)
    assert _calls(upstream, "cache me 8102") == 2
    opted = {"extra_headers": {"x-flywheel-cache": "allow"}, "temperature": 0.7}
    _ask(gateway, "cache me 8103", **opted)
    assert _ask(gateway, "cache me 8103", **opted).headers["x-flywheel-served-by"] == "cache"
    assert _calls(upstream, "cache me 8103") == 1
    # Hits never become training data.
    examples = {e.request_id for e in curate(gateway.state.store, "cached").examples}
    assert a.id in examples and b.id not in examples


def test_a_cached_answer_is_streamed_when_asked(gateway: RunningGateway, upstream) -> None:
    _ask(gateway, "cache me 8201", temperature=0)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="cached",
        temperature=0,
        stream=True,
        messages=[{"role": "user", "content": "cache me 8201"}],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: cache me 8201" and _calls(upstream, "cache me 8201") == 1
    row = gateway.row(chunks[0].id)
    assert row["served_by"] == "cache" and row["is_stream"] and row["cost_usd"] == 0


def test_entries_expire(gateway: RunningGateway, upstream) -> None:
    _ask(gateway, "cache me 8301", temperature=0)
    assert _ask(gateway, "cache me 8301", temperature=0).headers["x-flywheel-served-by"] == "cache"
    time.sleep(1.6)  # the route's ttl_s is 1.5
    assert (
        _ask(gateway, "cache me 8301", temperature=0).headers["x-flywheel-served-by"] == "teacher"
    )


def test_a_masking_route_never_caches_raw_personal_data(gateway: RunningGateway, upstream) -> None:
    # The model sees the raw address here (mask_upstream: false) and echoes it back.
    content = "write to bob.k@example.org"
    for _ in range(2):
        _ask(gateway, content, model="cached-logmask", temperature=0)
    assert _calls(upstream, content) == 2, "an answer holding an e-mail address was cached"
    entries = gateway.state.cache._routes.get("cached-logmask", {})
    assert not any("bob.k@example.org" in str(v) for v in entries.values())
    plain = "no personal data 8401"
    for _ in range(2):
        _ask(gateway, plain, model="cached-logmask", temperature=0)
    assert _calls(upstream, plain) == 1
