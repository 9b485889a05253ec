"""Re-certification when the route's teacher changes: the distiller asks the new teacher the
run's eval prompts, scores the run's stored answers against them, and gates again; a run
that still agrees keeps serving (under the threshold the new answers choose), one that
does not is rolled back, each with an event saying why, once per change.

The old teacher answered `{"intent": ...}`; the new one (the fake upstream, a real HTTP
server) answers `echo: <the user's text>`. One promoted run had learned to answer like the
new teacher, the other like the old one."""

from __future__ import annotations

import dataclasses
import json
import uuid

from contracts.policy import PolicySet, Route
from distiller.certification import certified, flag_stale_certifications
from distiller.curation import curate
from distiller.datasets import build_dataset
from distiller.eval_reports import store_report
from distiller.evaluation import EvalReport, ExampleResult
from distiller.promotion import current, transition
from distiller.recertify import recertify_stale
from distiller.worker import distill_route
from tests.support.gateway import RunningGateway
from tests.support.intents import generate, insert_requests, intent_row

ROUTE = "recert-intents"
OLD = "openai/the-old-teacher"


def _route(**gate: object) -> Route:
    return Route.model_validate(
        {
            "name": ROUTE,
            "teacher": "teacher",
            "candidates": [
                {"name": "echoes", "model": "student-ok", "kind": "classifier"},
                {"name": "labels", "model": "student-ok", "kind": "classifier"},
            ],
            "gate": {"metric": "exact_match", "threshold": 0.8, "min_examples": 20, **gate},
        }
    )


def test_a_new_teacher_re_certifies_runs_in_the_rollout(gateway: RunningGateway, upstream) -> None:
    store = gateway.state.store
    policies: PolicySet = gateway.state.router.policies
    route = _route(min_coverage=0.5, certify_share=None)
    only = dataclasses.replace(policies, routes=[route])
    rows = [intent_row(t, i, route=ROUTE)[1] for t, i in generate(120, 21)]
    insert_requests(gateway, rows)
    ds = build_dataset(store, curate(store, ROUTE), eval_fraction=0.5)
    assert len(ds.eval) >= 40
    # Two promoted runs, certified on the old teacher's answers: both agreed with it.
    for name, answer in (
        ("echoes", lambda ex: f"echo: {ex.prompt[-1]['content']}"),
        ("labels", lambda ex: ex.answer),
    ):
        run_id = f"run-{name}-{uuid.uuid4().hex[:6]}"
        report = EvalReport(run_id, ds.eval_set_id, "exact_match", 0.8, 20, [], 0.5)
        report.results = [
            ExampleResult(ex.request_id, 1.0, True, 0.9, answer(ex), ex.answer) for ex in ds.eval
        ]
        on = {"teacher": OLD, "judge": "exact_match", "eval_set_id": ds.eval_set_id}
        store_report(store, report, ROUTE, name, 0.95, on | {"artifact_digest": "a1b2"})
        transition(store, ROUTE, name, "promoted", "gate passed", {}, run_id, ds.dataset_id, 0.9)
    asked = len(upstream.fake.requests)

    summary = distill_route(store, route, only, gateway.state.config.data_dir / "models")

    # The new teacher was asked every eval prompt, once per run.
    prompts = [r["messages"][-1]["content"] for r in upstream.fake.requests[asked:]]
    assert sorted(prompts) == sorted(2 * [ex.prompt[-1]["content"] for ex in ds.eval])
    assert len(summary["certification_stale"]) == 2
    done = dict(line.split(": ", 1) for line in summary["recertified"])
    assert done["echoes"].startswith(f"re-certified after teacher {OLD} → ")
    assert (
        f"{len(ds.eval)}/{len(ds.eval)} agree" in done["echoes"] or "kept agree" in done["echoes"]
    )
    assert done["labels"].startswith("promoted → rolled_back: re-certification after teacher")
    assert "< 0.8" in done["labels"]
    echoes, labels = current(store, ROUTE, "echoes"), current(store, ROUTE, "labels")
    assert echoes is not None and echoes.state == "promoted" and echoes.min_confidence == 0.9
    assert labels is not None and labels.state == "rolled_back"
    # The run's latest certification names the new teacher and carries the artifact's digest.
    cert = certified(store, echoes.version)
    teacher = policies.models["teacher"].model
    assert cert is not None and cert.teacher == teacher and cert.artifact_digest == "a1b2"
    assert cert.eval_set_id.startswith(f"{ds.eval_set_id}@{teacher}")
    events = store.query_dicts(
        "SELECT candidate, kind, reason, evidence FROM events WHERE route = {r:String} "
        "AND kind IN ('recertified', 'state_change') ORDER BY at",
        {"r": ROUTE},
    )
    recert = [e for e in events if e["kind"] == "recertified"]
    assert [e["candidate"] for e in recert] == ["echoes"]
    assert json.loads(recert[0]["evidence"])["before"]["teacher"] == OLD
    assert any(
        e["candidate"] == "labels" and "re-certification after" in e["reason"] for e in events
    )
    # Once per change: nothing is stale now, and a second pass asks the teacher nothing.
    assert flag_stale_certifications(store, route, only) == []
    asked = len(upstream.fake.requests)
    assert recertify_stale(store, route, only) == []
    assert len(upstream.fake.requests) == asked


def test_a_failing_new_teacher_changes_nothing_and_is_tried_again(
    gateway: RunningGateway,
) -> None:
    """Most calls to the new teacher fail: the run keeps its state and its old certification,
    the wait is noted once, and the next pass tries again."""
    store = gateway.state.store
    policies: PolicySet = gateway.state.router.policies
    down = policies.models["teacher"].model_copy(
        update={"api_base": "http://127.0.0.1:9", "timeout_s": 2}
    )
    other = dataclasses.replace(
        policies, models={**policies.models, "teacher": down}, routes=[_route()]
    )
    route = _route()
    rows = [intent_row(t, i, route=ROUTE)[1] for t, i in generate(40, 22)]
    insert_requests(gateway, rows)
    ds = build_dataset(store, curate(store, ROUTE), eval_fraction=0.5)
    run_id = f"run-down-{uuid.uuid4().hex[:6]}"
    report = EvalReport(run_id, ds.eval_set_id, "exact_match", 0.8, 20, [])
    report.results = [
        ExampleResult(ex.request_id, 1.0, True, 0.9, ex.answer, ex.answer) for ex in ds.eval
    ]
    store_report(store, report, ROUTE, "echoes", 0.95, {"teacher": OLD, "judge": "exact_match"})
    transition(store, ROUTE, "echoes", "promoted", "gate passed", {}, run_id, ds.dataset_id)
    for _ in range(2):
        out = recertify_stale(store, route, other)
        assert len(out) == 1 and "cannot re-certify on teacher" in out[0], out
        assert "tried again next pass" in out[0]
    st = current(store, ROUTE, "echoes")
    assert st is not None and st.state == "promoted" and st.version == run_id
    cert = certified(store, run_id)
    assert cert is not None and cert.teacher == OLD
    waits = store.query_rows(
        "SELECT count() FROM events WHERE route = {r:String} AND candidate = 'echoes' "
        "AND kind = 'recertification_waiting' AND JSONExtractString(evidence, 'run') = {v:String}",
        {"r": ROUTE, "v": run_id},
    )
    assert waits[0][0] == 1
