"""The distiller on a small generated workload: curation counts, stable splits, lineage both
ways, a real training run that beats its untrained base, gates, and rollback on audits.

Rows are written with the gateway's own row builder (`RequestRecord.to_row`) into the
session's ClickHouse, as a teacher-served workload would have left them."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.policy import PolicySet, Route
from distiller.base_model import build_tiny_base
from distiller.curation import curate
from distiller.datasets import (
    build_dataset,
    candidates_trained_on,
    delete_requests,
    requests_of_candidate,
    split_of,
)
from distiller.evaluation import EvalReport, ExampleResult, evaluate, wilson_lower
from distiller.promotion import current
from distiller.worker import distill_route
from tests.support.gateway import RunningGateway
from tests.support.intents import SYSTEM, generate, insert_requests, intent_row

ROUTE = "distill-intents"


@pytest.fixture(scope="module")
def workload(gateway: RunningGateway) -> dict:
    clean = generate(160, seed=1)
    rows, ids = [], {}
    for text, intent in clean:
        rid, row = intent_row(text, intent)
        rows.append(row)
        ids[rid] = intent
    planted = {
        "not_teacher": [intent_row(t, i, served_by="student")[1] for t, i in generate(5, 2)],
        "failed": [intent_row(t, i, status="upstream_error")[1] for t, i in generate(4, 3)],
        "no_consent": [intent_row(t, i, consent=False)[1] for t, i in generate(6, 4)],
        "guardrail_flagged": [intent_row(t, i, flagged=True)[1] for t, i in generate(3, 5)],
        # Same prompt in other case and spacing: exact duplicates after normalisation.
        "duplicate": [intent_row("  " + t.upper().replace(" ", "  "), i)[1] for t, i in clean[:5]],
        # One character more: near-duplicates.
        "near_duplicate": [intent_row(t + "!", i)[1] for t, i in clean[5:8]],
    }
    rated_down = [intent_row(t, i) for t, i in generate(4, 6)]
    planted["negative_feedback"] = [r for _, r in rated_down]
    for group in planted.values():
        rows += group
    insert_requests(gateway, rows)
    gateway.state.store.insert_rows(
        "feedback",
        [
            [uuid.uuid4(), rid, datetime.now(UTC), "bank", "k", 0.0, "wrong", ""]
            for rid, _ in rated_down
        ],
        ["feedback_id", "request_id", "created_at", "app", "key_id", "score", "tag", "comment"],
    )
    return {"clean": ids, "planted": {k: len(v) for k, v in planted.items()}}


def test_curation_counts_per_reason(gateway: RunningGateway, workload: dict) -> None:
    curated = curate(gateway.state.store, ROUTE)
    assert dict(curated.excluded) == workload["planted"]
    assert len(curated.examples) == len(workload["clean"])
    assert {e.request_id for e in curated.examples} == set(workload["clean"])
    assert curated.source_rows == len(workload["clean"]) + sum(workload["planted"].values())


def test_split_is_stable_as_data_grows(gateway: RunningGateway, workload: dict) -> None:
    store = gateway.state.store
    first = build_dataset(store, curate(store, ROUTE))
    assert first.eval_set_id.endswith("-eval-v1") and len(first.eval) > 10
    # Grow the workload by 80%: old examples keep their split, and the eval set is re-frozen.
    insert_requests(gateway, [intent_row(t, i)[1] for t, i in generate(130, seed=9)])
    second = build_dataset(store, curate(store, ROUTE))
    before = {e.request_id: "eval" for e in first.eval} | {
        e.request_id: "train" for e in first.train
    }
    after = {e.request_id: "eval" for e in second.eval} | {
        e.request_id: "train" for e in second.train
    }
    assert all(after[rid] == split for rid, split in before.items())
    assert second.eval_set_id.endswith("-eval-v2")
    assert {e.request_id for e in first.eval} <= {e.request_id for e in second.eval}
    # Growth below the threshold reuses the frozen version.
    third = build_dataset(store, curate(store, ROUTE))
    assert third.eval_set_id == second.eval_set_id
    # The split depends only on the normalised prompt.
    assert split_of("abc", 0.2) == split_of("abc", 0.2)


def test_wilson_lower_bound() -> None:
    assert wilson_lower(95, 100) == pytest.approx(0.8882, abs=1e-4)
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(10, 10) < 1.0


def _report(agree: int, n: int, threshold: float, min_examples: int) -> EvalReport:
    report = EvalReport("r", "e", "exact_match", threshold, min_examples)
    report.results = [
        ExampleResult(str(i), 1.0 if i < agree else 0.0, i < agree, 1.0 - i / (2 * n), "s", "t")
        for i in range(n)
    ]
    return report


def test_gate_passes_and_fails() -> None:
    assert _report(98, 100, 0.9, 50).passed()
    assert not _report(92, 100, 0.9, 50).passed(), "92% agreement, lower bound 0.85"
    assert not _report(30, 30, 0.8, 50).passed(), "too few examples"
    curve = _report(90, 100, 0.9, 50).coverage_curve(10)
    assert curve[0]["agreement"] == 1.0 and curve[-1]["coverage"] == 1.0
    assert _report(90, 100, 0.9, 50).threshold_for(0.99)["coverage"] == pytest.approx(0.9)
    assert _report(90, 100, 0.9, 50).threshold_for(0.97)["coverage"] == pytest.approx(0.92)


@pytest.mark.slow
def test_training_run_beats_untrained_base_and_gates(
    gateway: RunningGateway, workload: dict, tmp_path: Path
) -> None:
    store = gateway.state.store
    policies: PolicySet = gateway.state.router.policies
    route = Route.model_validate(
        {
            "name": ROUTE,
            "teacher": "teacher",
            "candidates": [{"name": "tiny", "model": "student-ok", "base": "local:tiny"}],
            "gate": {
                "metric": "json_field_match",
                "fields": ["intent"],
                "threshold": 0.6,
                "min_examples": 20,
            },
            "rollout": {"shadow_share": 0.1},
            "training": {"epochs": 15, "pretrain_steps": 100, "min_new_examples": 10},
        }
    )
    summary = distill_route(store, route, policies, tmp_path, force=True)
    run = summary["runs"][0]
    assert run["state"] == "shadow", run
    assert run["agreement"] >= 0.8 and run["examples"] >= 20
    # The untrained base (built and pretrained the same way) does not know the labels.
    base = build_tiny_base(
        [SYSTEM] + [t for t, _ in generate(50, 11)], tmp_path / "untrained", pretrain_steps=100
    )
    ds = build_dataset(store, curate(store, ROUTE))
    untrained = evaluate(
        base, "untrained", ds.eval_set_id, ds.eval, "json_field_match", 0.6, 20, ["intent"]
    )
    assert untrained.agreement < 0.3 < run["agreement"]
    # What was stored: run, report with per-example rows, state, event.
    runs = store.query_dicts(
        "SELECT * FROM training_runs WHERE run_id = {r:String} AND status = 'succeeded'",
        {"r": run["run_id"]},
    )
    assert runs[0]["steps"] > 0 and runs[0]["losses"][-1] < runs[0]["losses"][0]
    assert Path(runs[0]["artifact_path"], "config.json").exists()
    results = store.query_rows(
        "SELECT count(), sum(agree) FROM eval_results WHERE run_id = {r:String}",
        {"r": run["run_id"]},
    )
    assert results[0][0] == run["examples"]
    assert current(store, ROUTE, "tiny").state == "shadow"
    events = store.query_dicts(
        "SELECT * FROM events WHERE route = {r:String} AND "
        "candidate = 'tiny' AND kind = 'state_change'",
        {"r": ROUTE},
    )
    assert events[-1]["to_state"] == "shadow" and "gate passed" in events[-1]["reason"]
    assert json.loads(events[-1]["evidence"])["eval_set"] == summary["eval_set"]
    # What it was certified on: the teacher, the judge, digests of the rows and the artifact.
    from distiller.certification import (
        artifact_digest,
        certified,
        data_digest,
        flag_stale_certifications,
    )

    cert = certified(store, run["run_id"])
    assert cert is not None
    assert cert.teacher == policies.models["teacher"].model
    assert cert.judge == "json_field_match(intent)" and cert.eval_set_id == summary["eval_set"]
    assert cert.data_digest == data_digest(ds.eval)
    assert cert.artifact_digest == artifact_digest(runs[0]["artifact_path"]) != ""
    assert flag_stale_certifications(store, route, policies) == []
    # The route's teacher changes: the certification is flagged once per run.
    changed = policies.models["teacher"].model_copy(update={"model": "openai/o9"})
    other = dataclasses.replace(policies, models={**policies.models, "teacher": changed})
    for _ in range(2):
        stale = flag_stale_certifications(store, route, other)
        assert len(stale) == 1 and f"teacher {cert.teacher} → openai/o9" in stale[0]
    flags = store.query_dicts(
        "SELECT evidence FROM events WHERE kind = 'certification_stale' AND route = {r:String}",
        {"r": ROUTE},
    )
    assert len(flags) == 1
    assert json.loads(flags[0]["evidence"])["certified_on"]["teacher"] == cert.teacher

    # Lineage, both ways, and erasure.
    learned = requests_of_candidate(store, ROUTE, "tiny")
    assert len(learned) == summary["train"]
    assert (ROUTE, "tiny", run["run_id"]) in candidates_trained_on(store, learned[:1])
    flagged = delete_requests(store, learned[:2], "user erasure request")
    assert flagged == [(ROUTE, "tiny")]
    ev = store.query_dicts(
        "SELECT * FROM events WHERE kind = 'lineage' AND route = {r:String}", {"r": ROUTE}
    )
    assert ev and "retrain required" in ev[-1]["reason"]


@pytest.mark.slow
def test_embedded_worker_trains_in_a_subprocess(
    gateway: RunningGateway, workload: dict, tmp_path: Path
) -> None:
    """Inside `flywheel serve` the distiller shares the gateway's process: training runs in
    a spawned subprocess, and the gateway keeps answering meanwhile."""
    import os
    import threading

    import openai

    from distiller.embedded import EmbeddedDistiller
    from tests.support.gateway import APP_KEY

    policies: PolicySet = gateway.state.router.policies
    route = Route.model_validate(
        {
            "name": ROUTE,
            "teacher": "teacher",
            "candidates": [{"name": "embedded", "model": "student-ok", "base": "local:tiny"}],
            "gate": {"metric": "json_field_match", "fields": ["intent"], "min_examples": 5},
            "training": {"epochs": 1, "pretrain_steps": 10, "min_new_examples": 0},
        }
    )
    only = PolicySet(routes=[route], models=policies.models, version="t")
    worker = EmbeddedDistiller(gateway.state.store, lambda: only, tmp_path, 3600)
    out: list[dict] = []
    thread = threading.Thread(target=lambda: out.extend(worker.run_once()))
    thread.start()
    client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
    answered = 0
    while thread.is_alive():
        resp = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "still here?"}]
        )
        answered += resp.choices[0].message.content == "echo: still here?"
    thread.join()
    assert answered > 0
    run = out[0]["runs"][0]
    log = json.loads(Path(run["artifact"]).parent.joinpath("training_log.json").read_text())
    assert log["pid"] > 0 and log["pid"] != os.getpid()
    assert current(gateway.state.store, ROUTE, "embedded") is not None


def test_llm_judge_metric_asks_the_teacher(upstream) -> None:
    """The judge prompt goes to the teacher (the fake one answers YES for equal answers)."""
    from contracts.model_config import ModelConfig
    from distiller.evaluation import teacher_judge

    judge = teacher_judge(ModelConfig(model="openai/gpt-4o", api_base=upstream.base_url))
    prompt = [{"role": "user", "content": "q"}]
    assert judge(prompt, "The  Same", "the same") == 1.0
    assert judge(prompt, "different", "same") == 0.0
    assert "Same? YES or NO." in upstream.fake.requests[-1]["messages"][-1]["content"]
