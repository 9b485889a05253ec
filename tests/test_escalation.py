"""Escalation: a student that is unsure, or faces a prompt unlike its training data, hands
the request to the teacher; the user always gets one answer."""

from __future__ import annotations

from datetime import UTC, datetime

import openai

from tests.support.gateway import APP_KEY, RunningGateway
from tests.support.wait import eventually


def _ask(gw: RunningGateway, model: str, text: str, **kw):
    client = openai.OpenAI(base_url=gw.base_url, api_key=APP_KEY, max_retries=0)
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def _row(gw: RunningGateway, request_id: str) -> dict:
    return gw.row(request_id)


def test_confident_student_answers(gateway: RunningGateway) -> None:
    resp = _ask(gateway, "careful", "sure of this")
    assert resp.choices[0].message.content == "echo: sure of this"
    assert resp.choices[0].logprobs is None, "logprobs the client did not ask for are removed"
    row = _row(gateway, resp.id)
    assert row["served_by"] == "student" and row["route_reason"] == "promoted: ok"
    assert abs(row["confidence"] - 0.9) < 1e-9


def test_unsure_student_escalates_to_teacher(gateway: RunningGateway, upstream) -> None:
    resp = _ask(gateway, "careful", "not sure [[conf:0.3]]")
    assert resp.choices[0].message.content == "echo: not sure"
    row = _row(gateway, resp.id)
    assert row["served_model"] == "teacher" and row["served_by"] == "teacher"
    assert row["route_reason"] == "escalated: confidence 0.30 < 0.60"
    assert abs(row["confidence"] - 0.3) < 1e-9
    kept = gateway.rows(
        "SELECT kind, served_model, response FROM requests WHERE parent_id = {id:String}",
        id=resp.id,
    )
    assert len(kept) == 1 and kept[0]["kind"] == "escalated"
    assert kept[0]["served_model"] == "student-ok" and "echo: not sure" in kept[0]["response"]
    asked = [r["model"] for r in upstream.fake.requests[-2:]]
    assert asked == ["student-ok", "gpt-4o"]


def test_headers_tell_an_escalated_answer_from_plain_teacher_traffic(
    gateway: RunningGateway,
) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)

    def headers(model: str, text: str, **kw: object) -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}], **kw
        )
        raw.parse()
        return raw.headers["x-flywheel-served-by"], raw.headers["x-flywheel-reason"]

    assert headers("careful", "header sure") == ("student", "promoted: ok")
    assert headers("careful", "header unsure [[conf:0.3]]") == (
        "escalated",
        "escalated: confidence 0.30 < 0.60",
    )
    assert headers("careful", "header unsure [[conf:0.3]]", stream=True)[0] == "escalated"
    served, reason = headers("gpt-4o", "plain teacher traffic")
    assert served == "teacher" and not reason.startswith("escalated")


def test_escalation_when_streaming(gateway: RunningGateway) -> None:
    for text, served in [("stream sure", "student-ok"), ("stream unsure [[conf:0.2]]", "teacher")]:
        chunks = list(_ask(gateway, "careful", text, stream=True))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert content == "echo: " + text.split(" [[")[0]
        assert len({c.id for c in chunks}) == 1
        assert _row(gateway, chunks[0].id)["served_model"] == served


def test_prompt_far_from_training_data_goes_to_teacher(gateway: RunningGateway) -> None:
    train = [
        _ask(gateway, "support", f"I want a refund for order {n}, it never arrived").id
        for n in range(5)
    ]
    gateway.state.writer.flush()
    store = gateway.state.store
    store.insert_rows(
        "dataset_items",
        [["ds-novel", rid, "train"] for rid in train],
        ["dataset_id", "request_id", "split"],
    )
    store.insert_rows(
        "candidate_states",
        [["novel", "ok", "v1", "promoted", datetime.now(UTC), "test", "ds-novel"]],
        ["route", "candidate", "version", "state", "updated_at", "reason", "dataset_id"],
    )
    eventually(lambda: ("novel", "ok") in gateway.state.prompt_indexes)
    assert gateway.state.prompt_indexes[("novel", "ok")][1].size == 5

    near = _ask(gateway, "novel", "I want a refund for order 77, it never arrived")
    row = _row(gateway, near.id)
    assert row["served_by"] == "student", row["route_reason"]
    far = _ask(gateway, "novel", "Explain quantum chromodynamics to a golden retriever")
    row = _row(gateway, far.id)
    assert row["served_by"] == "teacher"
    assert row["route_reason"].startswith("escalated: prompt distance ")


def test_prompt_distance_is_sklearns_cosine_computed_on_the_query_columns() -> None:
    """The novelty index hashes the query itself (the hot path skips sklearn's transform):
    its distances are those of the plain sparse product, and a prompt with no n-grams is
    unlike everything."""
    from contracts.prompt_index import PromptIndex
    from tests.support.intents import generate

    train = [t for t, _ in generate(200, 5)]
    index = PromptIndex.build(train)
    reference = PromptIndex._vectorizer()
    for text in [t for t, _ in generate(30, 6)] + ["Explain quantum chromodynamics", train[3]]:
        expected = 1.0 - float((index.matrix @ reference.transform([text]).T).toarray().max())
        assert abs(index.distance(text) - expected) < 1e-5, text
    assert index.distance(train[3]) < 1e-5
    assert index.distance("") == 1.0 and PromptIndex.build([]).distance("hello") == 1.0
