"""The response cache: a repeated deterministic request is answered without an upstream
call, logged as the cache's (cost 0, the teacher's baseline), and never trained on."""

from __future__ import annotations

import time
from typing import Any

import openai

from distiller.curation import curate
from tests.support.gateway import APP_KEY, RunningGateway
from tests.support.wait import eventually


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


def _semantic(gw: RunningGateway, content: str, system: str = "Be brief.") -> Any:
    client = openai.OpenAI(base_url=gw.base_url, api_key=APP_KEY, max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model="cached-semantic",
        temperature=0,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": content}],
    )


def test_a_reworded_question_hits_the_semantic_cache_and_is_audited(
    gateway: RunningGateway, upstream
) -> None:
    first = _semantic(gateway, "how can I reset my online banking password 8401")
    near = _semantic(gateway, "How can I reset my online-banking password? 8401")
    assert first.headers["x-flywheel-served-by"] == "teacher"
    assert near.headers["x-flywheel-served-by"] == "cache"
    assert near.parse().choices[0].message.content == first.parse().choices[0].message.content
    row = gateway.row(near.parse().id)
    assert row["candidate"] == "semantic-cache@0.8" and row["cost_usd"] == 0
    assert row["route_reason"].startswith("semantic cache hit: similarity 0.")
    # Anything else differing misses: another system prompt, an unrelated question.
    other = _semantic(gateway, "How can I reset my online-banking password? 8401", "Be long.")
    assert other.headers["x-flywheel-served-by"] == "teacher"
    assert _semantic(gateway, "what time is it 8401").headers["x-flywheel-served-by"] == "teacher"
    # The route audits every semantic hit: the teacher's answer to the reworded question
    # differs from the cached one (the fake teacher echoes the exact words).
    audits = gateway.rows_eventually(
        "SELECT * FROM audits WHERE request_id = {r:String}", 1, r=near.parse().id
    )
    assert audits[0]["candidate"] == "semantic-cache@0.8" and audits[0]["agreement"] == 0
    assert _calls(upstream, "How can I reset my online-banking password? 8401") == 2


def test_a_semantic_cache_whose_audits_disagree_is_rolled_back(
    gateway: RunningGateway, upstream
) -> None:
    from distiller.cache_audits import advance_semantic
    from distiller.promotion import current

    store = gateway.state.store
    route = gateway.state.router.route_named("cached-semantic")
    assert route is not None
    hits = []
    for n in range(3):
        _semantic(gateway, f"please block my lost debit card number {n} 8601")
        hit = _semantic(gateway, f"Please block my lost debit card, number {n}! 8601")
        assert hit.headers["x-flywheel-served-by"] == "cache"
        hits.append(hit.parse().id)
    for rid in hits:
        gateway.rows_eventually("SELECT * FROM audits WHERE request_id = {r:String}", 1, r=rid)
    # The first pass finds it configured (on), the next reads its audits.
    assert advance_semantic(store, route) == [
        "semantic-cache@0.8: → promoted: semantic cache configured (threshold 0.8)"
    ]
    changes = advance_semantic(store, route)
    assert any("rolled_back" in c for c in changes), changes
    assert current(store, "cached-semantic", "semantic-cache@0.8").state == "rolled_back"
    eventually(
        lambda: gateway.state.router.states.get("cached-semantic", "semantic-cache@0.8"),
        15,
        lambda s: s == "rolled_back",
    )
    # Rolled back: a rewording goes to the teacher; an exact repeat still hits.
    again = _semantic(gateway, "Please block my lost debit card, number 0!! 8601")
    assert again.headers["x-flywheel-served-by"] == "teacher"
    exact = _semantic(gateway, "please block my lost debit card number 0 8601")
    assert exact.headers["x-flywheel-served-by"] == "cache"


def test_the_semantic_index_holds_at_most_its_bound() -> None:
    """One context (one system prompt) filled far past `max_entries`: evicted vectors leave
    the matrix, and only live ones are found."""
    import asyncio

    from contracts.policy import SemanticCache
    from gateway.semantic_cache import SemanticIndex

    index, policy = SemanticIndex(), SemanticCache(threshold=0.9)

    async def fill() -> tuple[object, object, object]:
        for n in range(1000):
            await index.add("r", "ctx", f"k{n}", f"question {n:04d} about my card", 60, 10)
        return (
            await index.nearest("r", "ctx", "question 0995 about my card", policy, 60, 10),
            await index.nearest("r", "ctx", "question 0005 about my card", policy, 60, 10),
            index._routes["r"].contexts["ctx"].matrix.shape[0],
        )

    recent, evicted, rows = asyncio.run(fill())
    assert recent is not None and recent[0] == "k995"
    assert evicted is None or evicted[0] != "k5"  # its own vector is gone
    assert rows <= 10 + 32 + 1
