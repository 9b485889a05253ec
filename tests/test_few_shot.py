"""Few-shot candidates: built from a route's dataset (an index, not a training run), gated on
the teacher's answers like a fine-tuned student, served with their examples in the prompt
once promoted, priced by that longer prompt, traced back to the examples they show, and
counted as their own lever in the savings."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from contracts.policy import PolicySet
from distiller.datasets import candidates_trained_on, requests_of_candidate
from distiller.promotion import current
from distiller.worker import distill_route
from students.few_shot import FewShotIndex, digest
from tests.support.dashboard_data import api_get
from tests.support.gateway import APP_KEY, FINANCE_KEY, RunningGateway
from tests.support.intents import SYSTEM, generate, insert_requests, intent_row
from tests.support.states import write_state
from tests.support.wait import eventually

ROUTE = "fewshot"


@pytest.fixture(scope="module")
def distilled(gateway: RunningGateway, tmp_path_factory: pytest.TempPathFactory) -> dict:
    store = gateway.state.store
    insert_requests(gateway, [intent_row(t, i, route=ROUTE)[1] for t, i in generate(160, 31)])
    policies: PolicySet = gateway.state.router.policies
    route = gateway.state.router.route_named(ROUTE)
    assert route is not None
    return distill_route(store, route, policies, tmp_path_factory.mktemp("fs"), force=True)


def test_the_candidate_is_an_index_gated_like_a_student(
    gateway: RunningGateway, distilled: dict
) -> None:
    store = gateway.state.store
    runs = {r["candidate"]: r for r in distilled["runs"]}
    fs, blind = runs["fs"], runs["blind"]
    # The in-context learner copies its nearest examples' answers: it passes; the model that
    # ignores its examples does not.
    assert fs["state"] == "shadow" and fs["agreement"] >= 0.9, fs
    assert blind["state"] == "failed" and blind["agreement"] < 0.2, blind
    assert current(store, ROUTE, "fs").state == "shadow"
    # The index is a versioned artifact of the dataset: its examples are the train split.
    index = FewShotIndex.load(fs["index"])
    assert index.dataset_id == distilled["dataset_id"] and index.k == 4
    assert len(index.shots) == distilled["train"]
    learned = requests_of_candidate(store, ROUTE, "fs")
    assert sorted(s.request_id for s in index.shots) == sorted(learned)
    manifest = json.loads(Path(fs["index"], "few_shot.json").read_text())
    assert manifest["examples_digest"] == digest(learned)
    # Lineage both ways: the run from one of its examples.
    assert (ROUTE, "fs", fs["run_id"]) in candidates_trained_on(store, learned[:1])
    # The eval calls were real calls to the candidate's model, with examples in the prompt.
    rows = store.query_rows(
        "SELECT count(), avg(agree) FROM eval_results WHERE run_id = {r:String}",
        {"r": fs["run_id"]},
    )
    assert rows[0][0] == distilled["eval"] == fs["examples"]


def test_a_promoted_few_shot_candidate_serves_with_its_examples(
    gateway: RunningGateway, upstream, distilled: dict
) -> None:
    fs = next(r for r in distilled["runs"] if r["candidate"] == "fs")
    write_state(gateway.state.store, ROUTE, "fs", "promoted", version=fs["run_id"])
    # The index may already be loaded from the shadow state: wait for the router to see the
    # promotion itself, which the gateway swaps in only after the index is in memory.
    assert eventually(
        lambda: (
            gateway.state.router.states.get(ROUTE, "fs") == "promoted"
            and gateway.state.router.states.runs.get((ROUTE, "fs")) == fs["run_id"]
        ),
        20,
    )
    assert gateway.state.few_shot[(ROUTE, "fs")][0] == fs["run_id"]
    client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
    text, intent = generate(1, 77)[0]
    resp = client.chat.completions.with_raw_response.create(
        model=ROUTE,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
    )
    answer = resp.parse()
    assert resp.headers["x-flywheel-served-by"] == "student", gateway.row(answer.id)["route_reason"]
    assert json.loads(answer.choices[0].message.content or "{}") == {"intent": intent}
    sent = next(b for b in reversed(upstream.fake.requests) if b.get("model") == "fewshot-small")
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system"] + ["user", "assistant"] * 4 + ["user"]
    assert sent["messages"][-1]["content"] == text
    # Priced by its own prompt: the examples are paid for, at the candidate's price.
    row = gateway.row(answer.id)
    assert (row["served_by"], row["candidate"], row["served_model"]) == (
        "student",
        "fs",
        "fewshot-small",
    )
    words = len(SYSTEM.split()) + len(text.split())
    assert row["input_tokens"] > words + 4 * 5 and row["cost_usd"] > 0
    # Savings by lever name the few-shot candidate's answers as its own.
    levers = eventually(
        lambda: {
            r["lever"]: r
            for r in api_get(gateway, "/admin/api/finance", key=FINANCE_KEY, split="lever").json()[
                "by_lever"
            ]
        },
        15,
        lambda by: "few_shot" in by,
    )
    assert levers["few_shot"]["user_requests"] >= 1


def test_a_few_shot_run_without_its_index_falls_back_to_the_teacher(
    gateway: RunningGateway, distilled: dict
) -> None:
    """The state names a run whose index cannot be found: the teacher answers."""
    write_state(gateway.state.store, ROUTE, "fs", "promoted", version="fewshot-fs-missing")
    eventually(
        lambda: gateway.state.router.states.runs.get((ROUTE, "fs")),
        20,
        lambda run: run == "fewshot-fs-missing",
    )
    client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
    resp = client.chat.completions.with_raw_response.create(
        model=ROUTE, messages=[{"role": "user", "content": "hello there"}]
    )
    assert resp.headers["x-flywheel-served-by"] == "teacher"
    row = gateway.row(resp.parse().id)
    assert row["route_reason"].startswith("fallback: student")


def test_a_few_shot_candidate_names_a_retriever_not_a_base(tmp_path: Path) -> None:
    from contracts.policy import PolicyError, load_policies

    policy = tmp_path / "p.yaml"
    policy.write_text(
        "models: {small: {model: openai/small, price: {input_per_million: '1'}}}\n"
        "routes:\n"
        "  - name: r\n"
        "    teacher: small\n"
        "    candidates: [{name: fs, model: small, kind: few_shot, base: minilm-l6}]\n"
    )
    with pytest.raises(PolicyError, match="set `retriever` instead"):
        load_policies([policy])
    policy.write_text(policy.read_text().replace("base: minilm-l6", "retriever: minilm-l6"))
    cand = load_policies([policy]).routes[0].candidates[0]
    assert (cand.kind, cand.resolved_base, cand.examples) == ("few_shot", "minilm-l6", 8)
    policy.write_text(
        policy.read_text().replace("kind: few_shot, retriever", "kind: lm, retriever")
    )
    with pytest.raises(PolicyError, match="retriever: only for `kind: few_shot`"):
        load_policies([policy])
