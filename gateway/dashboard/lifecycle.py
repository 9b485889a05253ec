"""Admin views of the flywheel: routes and their policy, candidates with their evaluations
and state, the promotion and rollback history, and lineage from a model to its requests.

Everything but the routes is read from ClickHouse, where the distiller and the router write
it, so the page shows what the system did, not what this process remembers.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import orjson

from gateway.dashboard.filters import Filters
from gateway.state import GatewayState
from store import Store
from store.runs import latest_runs


def _iso(rows: list[dict[str, Any]], *columns: str) -> list[dict[str, Any]]:
    for r in rows:
        for c in columns:
            if r.get(c) is not None and hasattr(r[c], "isoformat"):
                r[c] = r[c].replace(tzinfo=UTC).isoformat()
    return rows


def _round(x: Any) -> float | None:
    """A report's figure to 4 places; None where the report has none."""
    return None if x is None else round(float(x), 4)


def routes(state: GatewayState) -> dict[str, Any]:
    router = state.router
    return {
        "policy": {**state.policy_status, "serving_version": router.policy_version},
        "routes": [
            {
                "route": r.name,
                "match": orjson.dumps(r.match.model_dump(exclude_defaults=True)).decode(),
                "teacher": r.teacher,
                "fallbacks": ", ".join(r.fallbacks),
                "candidates": ", ".join(f"{c.name} ({c.model})" for c in r.candidates),
                "gate": f"{r.gate.metric} ≥ {r.gate.threshold}",
                "rollout": orjson.dumps(r.rollout.model_dump(mode="json")).decode(),
                "audit_share": r.audit.share,
                "escalation": orjson.dumps(
                    r.escalation.model_dump(mode="json", exclude_defaults=True)
                ).decode(),
                "guardrails": ", ".join(
                    f"{rail.rail}:{rail.action}"
                    for rail in (*r.guardrails.input, *r.guardrails.output)
                ),
            }
            for r in router.policies.routes
        ],
    }


_CANDIDATES = """
SELECT s.route AS route, s.candidate AS candidate, s.state AS state, s.version AS version,
       s.dataset_id AS dataset_id, s.updated_at AS updated_at, s.reason AS reason,
       s.escalate_below AS escalate_below
FROM (
    SELECT route, candidate, argMax(c.state, c.updated_at) AS state,
           argMax(c.version, c.updated_at) AS version,
           argMax(c.dataset_id, c.updated_at) AS dataset_id,
           max(c.updated_at) AS updated_at, argMax(c.reason, c.updated_at) AS reason,
           argMax(c.min_confidence, c.updated_at) AS escalate_below
    FROM candidate_states AS c GROUP BY route, candidate
) AS s
ORDER BY route, candidate
"""

# The latest row of each (route, candidate): its newest run's state and progress.
_RUNS = """
SELECT route, candidate, run_id, dataset_id, base, steps, seconds, device,
       if(empty(losses), loss, losses[length(losses)]) AS final_loss, created_at, status,
       stage, step, total_steps, tokens_per_s, attempt, backend, error
FROM training_runs ORDER BY updated_at DESC LIMIT 1 BY route, candidate
"""

_REPORTS = """
SELECT route, candidate, run_id, eval_set_id, metric, examples, agreement, wilson_lower,
       threshold, passed, created_at, coverage, min_coverage, coverage_curve,
       teacher, judge, data_digest, artifact_digest, certified_examples, certified_kept,
       certified_agreement, certified_lower, certified_upper, certified_coverage
FROM eval_reports ORDER BY created_at DESC LIMIT 1 BY route, candidate
"""


def candidates(store: Store) -> dict[str, Any]:
    rows = _iso(store.query_dicts(_CANDIDATES, {}), "updated_at")
    runs = {(r["route"], r["candidate"]): r for r in store.query_dicts(_RUNS, {})}
    reports = {(r["route"], r["candidate"]): r for r in store.query_dicts(_REPORTS, {})}
    for row in rows:
        run = runs.get((row["route"], row["candidate"]), {})
        rep = reports.get((row["route"], row["candidate"]), {})
        row.update(
            run_id=run.get("run_id", ""),
            base=run.get("base", ""),
            steps=run.get("steps", 0),
            train_seconds=round(float(run.get("seconds", 0.0)), 1),
            final_loss=round(float(run.get("final_loss") or 0.0), 4),
            device=run.get("device", ""),
            run_status=run.get("status", ""),
            run_stage=run.get("stage", ""),
            run_progress=f"{run['step']}/{run['total_steps']}" if run.get("total_steps") else "",
            tokens_per_s=round(float(run.get("tokens_per_s") or 0.0), 1),
            run_attempt=run.get("attempt", 0),
            run_backend=run.get("backend", ""),
            run_error=run.get("error", ""),
            eval_set_id=rep.get("eval_set_id", ""),
            eval_metric=rep.get("metric", ""),
            eval_examples=rep.get("examples", 0),
            eval_agreement=round(float(rep.get("agreement", 0.0)), 4) if rep else None,
            eval_wilson_lower=round(float(rep.get("wilson_lower", 0.0)), 4) if rep else None,
            gate_threshold=rep.get("threshold"),
            gate_min_coverage=rep.get("min_coverage"),
            eval_coverage=round(float(rep.get("coverage", 1.0)), 4) if rep else None,
            eval_passed=rep.get("passed"),
            # What the gate certified it on (empty for reports before this was kept).
            certified_teacher=rep.get("teacher", ""),
            certified_judge=rep.get("judge", ""),
            eval_data_digest=rep.get("data_digest", ""),
            artifact_digest=rep.get("artifact_digest", ""),
            # The certify rows (a selective gate's, held out of the threshold's choice): what
            # the threshold keeps of rows it never saw. 0 examples: not split.
            certified_examples=rep.get("certified_examples", 0),
            certified_coverage=_round(rep.get("certified_coverage")),
            certified_agreement=_round(rep.get("certified_agreement")),
            certified_lower=_round(rep.get("certified_lower")),
            certified_upper=_round(rep.get("certified_upper")),
        )
    # The coverage-vs-agreement curve of each candidate's latest evaluation: which share of
    # traffic it keeps at each confidence threshold, and how often it agrees there.
    curves = [
        {
            "route": route,
            "candidate": candidate,
            "run_id": rep.get("run_id", ""),
            "min_confidence": round(float(point["min_confidence"]), 4),
            "coverage": round(float(point["coverage"]), 4),
            "agreement": round(float(point["agreement"]), 4),
        }
        for (route, candidate), rep in sorted(reports.items())
        for point in orjson.loads(rep.get("coverage_curve") or "[]")
    ]
    return {"candidates": rows, "coverage_curves": curves, "runs": latest_runs(store)}


def history(store: Store, f: Filters, route: str = "", limit: int = 500) -> dict[str, Any]:
    """State changes and flags with their reasons, newest first."""
    rows = store.query_dicts(
        "SELECT toString(event_id) AS event_id, at, route, candidate, kind, from_state,"
        " to_state, reason, evidence FROM events"
        " WHERE at >= {start:DateTime} AND at < {end:DateTime}"
        " AND ({route:String} = '' OR route = {route:String})"
        " ORDER BY at DESC LIMIT {n:UInt32}",
        {**f.params(), "route": route, "n": limit},
    )
    return {"events": _iso(rows, "at")}


def lineage(store: Store, route: str, candidate: str, limit: int = 200) -> dict[str, Any]:
    """Every training run of the candidate with its dataset, the dataset's make-up (split and
    where each answer came from) and its requests (the first `limit` of them)."""
    runs = _iso(
        store.query_dicts(
            "SELECT run_id, dataset_id, base, steps, device, artifact_path, created_at, status,"
            " attempt, backend, error FROM training_runs"
            " WHERE route = {r:String} AND candidate = {c:String}"
            " ORDER BY updated_at DESC LIMIT 1 BY run_id",
            {"r": route, "c": candidate},
        ),
        "created_at",
    )
    dataset_ids = sorted({r["dataset_id"] for r in runs})
    datasets = _iso(
        store.query_dicts(
            "SELECT dataset_id, created_at, train_size, eval_size, eval_set_id, excluded,"
            " source_rows FROM datasets WHERE dataset_id IN {ids:Array(String)}"
            " ORDER BY created_at DESC",
            {"ids": dataset_ids},
        ),
        "created_at",
    )
    makeup = store.query_dicts(
        "SELECT dataset_id, split, answer_source, count() AS examples FROM dataset_items"
        " WHERE dataset_id IN {ids:Array(String)}"
        " GROUP BY dataset_id, split, answer_source ORDER BY dataset_id, split, answer_source",
        {"ids": dataset_ids},
    )
    latest = runs[0]["dataset_id"] if runs else ""
    items = _iso(
        store.query_dicts(
            "SELECT toString(d.request_id) AS request_id, d.split AS split,"
            " d.answer_source AS answer_source, d.label_id AS label_id, r.app AS app,"
            " r.started_at AS started_at,"
            # The last turn's text: what the request asked, without the shared system prompt.
            " substring(JSONExtractString(arrayElement(JSONExtractArrayRaw(r.messages), -1),"
            " 'content'), 1, 300) AS prompt"
            " FROM dataset_items AS d INNER JOIN"
            " (SELECT request_id, app, started_at, messages FROM requests"
            "  WHERE request_id IN (SELECT request_id FROM dataset_items"
            "  WHERE dataset_id = {d:String})) AS r ON d.request_id = r.request_id"
            " WHERE d.dataset_id = {d:String} ORDER BY d.split, r.started_at"
            " LIMIT {n:UInt32}",
            {"d": latest, "n": limit},
        ),
        "started_at",
    )
    return {
        "route": route,
        "candidate": candidate,
        "runs": runs,
        "datasets": datasets,
        "makeup": makeup,
        "items": items,
    }
