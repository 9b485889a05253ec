"""Re-certification after the route's teacher or judge changes.

A run in the rollout (shadow, canary, promoted) was certified against the answers of the
teacher it learned from, scored by the judge of that time. Once the route names another
teacher or judge, that figure no longer says what users get. The distiller then asks the new
teacher the run's eval prompts (only when the teacher changed; a new judge alone re-scores
the stored references), scores the run's stored eval answers against them with the current
judge, and gates again. The artifact is not run again: it is the one certified (its digest
is carried over), and its answer and confidence to every eval row are in `eval_results`.

A run that passes keeps its state, under the threshold the new answers choose when its gate
is selective (event `recertified`); one that no longer passes leaves the rollout
(`rolled_back` while it serves, `failed` in shadow), saying why.

Invariant: the new report, stored under the run with an eval set id naming the teacher, is
the run's latest certification, so a run is re-certified once per change; a pass whose
teacher calls mostly fail changes nothing, notes why once, and is tried again next pass.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from contracts.policy import PolicySet, Route
from contracts.states import SERVING_STATES, CandidateState
from distiller.certification import (
    Certification,
    changed_since,
    data_digest,
    judge_of,
    stale_certifications,
)
from distiller.curation import curate
from distiller.datasets import reload_dataset
from distiller.eval_reports import store_report
from distiller.evaluation import EvalReport, score_answers, teacher_judge
from distiller.examples import Example
from distiller.few_shot import CONCURRENCY, ask
from distiller.promotion import State, note_once, set_threshold, transition
from store import Store

log = logging.getLogger("flywheel.distiller")

MAX_ANSWER_TOKENS = 256  # a reference answer, as long as the teacher's usually are


def stored_answers(store: Store, run_id: str, eval_set_id: str) -> dict[str, tuple[str, float]]:
    """The run's answer and confidence to each eval row it was certified on."""
    rows = store.query_rows(
        "SELECT toString(request_id), any(student_answer), any(confidence) FROM eval_results "
        "WHERE run_id = {r:String} AND eval_set_id = {e:String} GROUP BY request_id",
        {"r": run_id, "e": eval_set_id},
    )
    return {str(r[0]): (str(r[1]), float(r[2])) for r in rows}


def _teacher_answers(route: Route, policies: PolicySet, examples: list[Example]) -> list[Any]:
    """The route's teacher asked each eval prompt: its answer, or the error's name."""
    call = ask(policies.models[route.teacher], MAX_ANSWER_TOKENS, logprobs=False)

    def one(ex: Example) -> str | Exception:
        try:
            return str(call(ex.prompt)[0])
        except Exception as e:  # one failed call drops one row; most failing stops the pass
            return e

    with ThreadPoolExecutor(CONCURRENCY, "recertify") as pool:
        return list(pool.map(one, examples))


def recertify(
    store: Store, route: Route, policies: PolicySet, candidate: str, st: State, cert: Certification
) -> str:
    """Gate the run `st` again against the route's teacher and judge now; what happened."""
    teacher = policies.models[route.teacher].model
    judge = judge_of(route, teacher)
    answers = stored_answers(store, st.version, cert.eval_set_id)
    ds = reload_dataset(store, curate(store, route.name), st.dataset_id)
    examples = [e for e in ds.eval if e.request_id in answers]
    if not examples:
        why = f"cannot re-certify: no stored eval answers of run {st.version}"
        note_once(store, route.name, candidate, "recertification_waiting", st.version, why, {})
        return f"{candidate}: {why}"
    if cert.teacher != teacher:
        new = _teacher_answers(route, policies, examples)
        failed = [a for a in new if isinstance(a, Exception)]
        if len(failed) > len(new) // 2:
            why = (
                f"cannot re-certify on teacher {teacher} yet: {len(failed)} of {len(new)} "
                f"calls failed ({type(failed[0]).__name__}: {failed[0]}); tried again next pass"
            )
            note_once(store, route.name, candidate, "recertification_waiting", st.version, why, {})
            return f"{candidate}: {why}"
        examples = [
            replace(e, answer=a)
            for e, a in zip(examples, new, strict=True)
            if not isinstance(a, Exception)
        ]
    gate = route.gate
    base_set = cert.eval_set_id.split("@", 1)[0]
    report = EvalReport(
        st.version,
        f"{base_set}@{teacher}-{uuid.uuid4().hex[:6]}",
        gate.metric,
        gate.threshold,
        gate.min_examples,
        [],
        gate.min_coverage,
        gate.certify_share,
    )
    judged_by = (
        teacher_judge(policies.models[route.teacher]) if gate.metric == "llm_judge" else None
    )
    score_answers(
        report, examples, [answers[e.request_id] for e in examples], gate.fields, judged_by
    )
    now = Certification(
        teacher, judge, report.eval_set_id, data_digest(examples), cert.artifact_digest
    )
    store_report(store, report, route.name, candidate, gate.confidence, now.as_dict())
    chosen = report.selection(gate.confidence) if gate.min_coverage is not None else None
    fresh = report.certified(gate.confidence) if gate.min_coverage is not None else None
    evidence: dict[str, Any] = {
        "certified_on": now.as_dict(),
        "before": cert.as_dict(),
        "examples": report.n,
        "agreement": round(report.agreement, 4),
        "wilson_lower": round(report.lower_bound(gate.confidence), 4),
        "threshold": gate.threshold,
        "min_confidence": chosen.min_confidence if chosen else None,
        "coverage": round(chosen.coverage, 4) if chosen else None,
        "certified": None if fresh is None else fresh.as_dict(),
    }
    changed = changed_since(cert, teacher, judge)
    figure = (
        f"{fresh.agree}/{fresh.kept} kept agree (lower bound {fresh.lower:.3f}, "
        f"{fresh.coverage:.0%} kept)"
        if fresh is not None and fresh.kept
        else f"{sum(r.agree for r in report.results)}/{report.n} agree "
        f"(lower bound {report.lower_bound(gate.confidence):.3f})"
    )
    if report.passed(gate.confidence):
        threshold = report.serving_threshold(gate.confidence)
        at = f" at threshold {threshold:.3f}" if threshold is not None else ""
        why = f"re-certified after {', '.join(changed)}: {figure}{at}"
        set_threshold(
            store,
            route.name,
            candidate,
            st.state,
            st.version,
            st.dataset_id,
            threshold if threshold is not None else st.min_confidence,
            why,
            evidence,
            kind="recertified",
        )
        return f"{candidate}: {why}"
    failed_gate = report.contradicted(gate.confidence) or f"{figure} < {gate.threshold}"
    to: CandidateState = "rolled_back" if st.state in SERVING_STATES else "failed"
    why = f"re-certification after {', '.join(changed)} failed: {failed_gate}"
    transition(store, route.name, candidate, to, why, evidence)
    return f"{candidate}: {st.state} → {to}: {why}"


def recertify_stale(store: Store, route: Route, policies: PolicySet) -> list[str]:
    """Re-certify every run of the route certified on another teacher or judge."""
    out = []
    for candidate, st, cert, _changed in stale_certifications(store, route, policies):
        try:
            out.append(recertify(store, route, policies, candidate, st, cert))
        except Exception as e:  # one run's failure must not stop the distiller's pass
            log.exception("re-certifying %s/%s", route.name, candidate)
            out.append(f"{candidate}: re-certification raised {type(e).__name__}: {e}")
    return out
