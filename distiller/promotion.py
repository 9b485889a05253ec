"""Candidate lifecycle: trained → failed | shadow → canary → promoted, and rolled_back.

- A run that passes its gate enters the rollout: `shadow` when the route samples shadows,
  else `canary` (or straight to `promoted` when the canary share is 0).
- shadow → canary once at least `shadow_min_examples` shadow answers agree with the
  teacher's answers to the same requests at the gate's threshold (Wilson lower bound); a
  selective candidate is judged on the answers it would keep (those below its confidence
  threshold count as coverage). When the upper bound falls below the threshold, or below
  the lower bound of the kept agreement its gate certified (the traffic agrees less than
  the eval set did), a selective candidate's confidence threshold is first raised to the
  lowest one whose kept shadow answers reach it (while `gate.min_coverage` of them stay
  kept), and the stage's evidence starts again at the new threshold; shadow → failed when
  no threshold does, or when the stage outlives `rollout.stage_timeout_h` without the
  evidence it needs (`distiller/evidence.py`); until then it waits, and says how many
  answers it needs.
- canary → promoted, recalibrated or rolled_back as its audits decide
  (`distiller/audits.py`: the lower bound of this run's audited agreement must reach the
  audit target to promote; an upper bound below it raises a selective candidate's threshold,
  or rolls it back); the router follows at its next state refresh.
- A promoted candidate that is cheaper than another promoted one retires the dearer one.
- canary → promoted is held while the student is too slow at the route's traffic over the
  last `rollout.latency_window_h` (its p99 latency over its canary and shadow answers above
  `max_p99_ratio` times the teacher's p99, or above `max_p99_ms`) or while students on the
  route fall back on timeouts (more than 1% of their answers): serving cheaper must not
  make users wait longer than the policy accepts.

Invariant: every state change writes both the new state (`candidate_states`, what the
router reads) and an `events` row with the reason and its evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts.policy import Route
from contracts.states import CandidateState, as_state, may_move
from distiller.audits import decide
from distiller.events import record_event
from distiller.evidence import (
    Judged,
    StageEvidence,
    behind_certified,
    certified_kept,
    entered,
    judge_kept,
    recalibrated,
    shadow_answers,
    verdict,
)
from distiller.latency import latency_hold
from store import Store

# A `candidate_states` row, in the order `transition` writes it.
STATE_COLUMNS = [
    "route",
    "candidate",
    "version",
    "state",
    "updated_at",
    "reason",
    "dataset_id",
    "min_confidence",
]


@dataclass(frozen=True)
class State:
    state: CandidateState
    version: str
    dataset_id: str
    min_confidence: float | None = None


def current(store: Store, route: str, candidate: str) -> State | None:
    rows = store.query_rows(
        "SELECT argMax(state, updated_at), argMax(version, updated_at), "
        "argMax(dataset_id, updated_at), argMax(min_confidence, updated_at) "
        "FROM candidate_states "
        "WHERE route = {r:String} AND candidate = {c:String} GROUP BY route, candidate",
        {"r": route, "c": candidate},
    )
    if not rows:
        return None
    threshold = rows[0][3]
    return State(
        as_state(str(rows[0][0])),
        str(rows[0][1]),
        str(rows[0][2]),
        None if threshold is None else float(threshold),
    )


def transition(
    store: Store,
    route: str,
    candidate: str,
    to_state: CandidateState,
    reason: str,
    evidence: dict[str, Any],
    version: str = "",
    dataset_id: str = "",
    min_confidence: float | None = None,
) -> None:
    """Write the candidate's new state (what the router reads) and the event that says why.
    A new run sets its own version, dataset and escalation threshold; a move along the
    rollout keeps those of the run it promotes."""
    before = current(store, route, candidate)
    if not may_move(before.state if before else "untrained", to_state):
        raise ValueError(
            f"{route}/{candidate}: {before.state if before else 'untrained'} → "
            f"{to_state} is not a legal move (contracts/states.py)"
        )
    fresh_run = bool(version)
    version = version or (before.version if before else "")
    dataset_id = dataset_id or (before.dataset_id if before else "")
    if not fresh_run and before is not None:
        min_confidence = before.min_confidence
    now = datetime.now(UTC)
    store.insert_rows(
        "candidate_states",
        [[route, candidate, version, to_state, now, reason, dataset_id, min_confidence]],
        STATE_COLUMNS,
    )
    record_event(
        store,
        route,
        candidate,
        "state_change",
        reason,
        evidence,
        before.state if before else "",
        to_state,
        now,
    )


def _canary_share(route: Route, name: str) -> float:
    cand = next((c for c in route.candidates if c.name == name), None)
    return route.rollout.canary_share if cand is None else route.canary_share(cand)


def set_threshold(
    store: Store,
    route: str,
    candidate: str,
    state: str,
    version: str,
    dataset_id: str,
    threshold: float | None,
    why: str,
    evidence: dict[str, Any],
    kind: str = "recalibrated",
) -> None:
    """A recalibration (or a re-certification): the same state and run under a new
    escalation threshold."""
    now = datetime.now(UTC)
    store.insert_rows(
        "candidate_states",
        [[route, candidate, version, state, now, why, dataset_id, threshold]],
        STATE_COLUMNS,
    )
    record_event(store, route, candidate, kind, why, evidence, state, state, now)


def after_evaluation(
    store: Store,
    route: Route,
    candidate: str,
    run_id: str,
    dataset_id: str,
    passed: bool,
    evidence: dict[str, Any],
    min_confidence: float | None = None,
) -> CandidateState:
    """Enter the rollout (or fail) after a gate; returns the new state."""
    state: CandidateState
    if "publish_error" in evidence:
        state, reason = "trained", f"gate passed but not published: {evidence['publish_error']}"
    elif not passed:
        why = evidence.get("gate_failed")
        state, reason = "failed", f"gate failed: {why}" if why else "gate failed"
    elif route.rollout.shadow_share > 0:
        state, reason = "shadow", "gate passed"
    elif _canary_share(route, candidate) > 0:
        state, reason = "canary", "gate passed; no shadow stage"
    else:
        state, reason = "promoted", "gate passed; no shadow or canary stage"
    transition(
        store, route.name, candidate, state, reason, evidence, run_id, dataset_id, min_confidence
    )
    return state


def recent_audits(store: Store, route: str, candidate: str, window: int) -> list[float]:
    rows = store.query_rows(
        "SELECT agreement FROM audits WHERE route = {r:String} AND candidate = {c:String} "
        "ORDER BY at DESC LIMIT {n:UInt32}",
        {"r": route, "c": candidate, "n": window},
    )
    return [float(r[0]) for r in rows]


def _hold(store: Store, route: str, candidate: str, why: str, evidence: dict[str, Any]) -> None:
    """Record a held promotion once per reason (the distiller asks on every pass)."""
    last = store.query_rows(
        "SELECT argMax(reason, at) FROM events WHERE route = {r:String} "
        "AND candidate = {c:String} AND kind = 'promotion_held'",
        {"r": route, "c": candidate},
    )
    if not last or last[0][0] != why:
        record_event(store, route, candidate, "promotion_held", why, evidence, "canary", "canary")


def advance(store: Store, route: Route, prices: dict[str, Any] | None = None) -> list[str]:
    """Move each candidate of the route along its rollout from the evidence gathered since.
    Returns a line per change."""
    changes = []
    for cand in route.candidates:
        st = current(store, route.name, cand.name)
        if st is None:
            continue
        if st.state == "shadow":
            change = _advance_shadow(store, route, cand.name, st)
            if change:
                changes.append(change)
        elif st.state in ("canary", "promoted"):
            change = _advance_audited(store, route, cand.name, st)
            if change:
                changes.append(change)
    changes += _retire_dearer(store, route, prices or {})
    return changes


def _advance_audited(store: Store, route: Route, candidate: str, st: State) -> str:
    """A canary or promoted candidate, as its audits decide (`distiller/audits.py`)."""
    call = decide(store, route, candidate, st.state, st.version, st.min_confidence)
    if call is None or call.action == "keep":
        return ""
    if call.action == "wait":
        note_once(
            store,
            route.name,
            candidate,
            "stage_waiting",
            st.version,
            f"canary waits for evidence: {call.why}",
            call.evidence,
        )
        return f"{candidate}: canary, waiting: {call.why}"
    if call.action == "recalibrate":
        assert call.threshold is not None
        set_threshold(
            store,
            route.name,
            candidate,
            st.state,
            st.version,
            st.dataset_id,
            call.threshold,
            call.why,
            call.evidence,
        )
        return f"{candidate}: {st.state}, recalibrated: {call.why}"
    if call.action == "roll_back":
        transition(store, route.name, candidate, "rolled_back", call.why, call.evidence)
        return f"{candidate}: {st.state} → rolled_back: {call.why}"
    held = latency_hold(store, route, candidate)
    if held is not None:
        _hold(store, route.name, candidate, held[0], {**held[1], "audits": call.evidence})
        return f"{candidate}: canary, promotion held: {held[0]}"
    transition(store, route.name, candidate, "promoted", call.why, call.evidence)
    return f"{candidate}: canary → promoted: {call.why}"


def _advance_shadow(store: Store, route: Route, candidate: str, st: State) -> str:
    """Move a shadow candidate on, fail it, or record once what it waits for."""
    threshold = route.escalation_threshold(st.min_confidence)
    began = entered(store, route.name, candidate, st.version, "shadow")
    # After a recalibration, evidence at the new threshold starts afresh: the threshold
    # was chosen on the answers before it.
    since = entered(store, route.name, candidate, st.version, "shadow", latest=True)
    answers = shadow_answers(store, route, candidate, since)
    ev = judge_kept(answers, route, threshold)
    target, min_n = route.gate.threshold, route.rollout.shadow_min_examples
    evidence: dict[str, Any] = {**ev.as_dict(), "target": target, "min_confidence": threshold}
    found = verdict(ev, min_n, target)
    kept = f" of {ev.seen} kept" if threshold is not None else ""
    record = f"shadow agreement {ev.agree}/{ev.n}{kept} (lower bound {ev.lower:.3f})"
    # Short of the target (or of what was certified): a selective candidate's threshold
    # rises first; a failed verdict fails only when no threshold will do.
    short = None
    if found == "fail":
        short = f"{record}: upper bound {ev.upper:.3f} < {target}"
    elif found == "wait":
        certified = certified_kept(store, st.version, threshold)
        if behind := behind_certified(ev.agree, ev.n, certified, route.gate.confidence):
            short = f"{record} < {target}: {behind}"
    raised = _shadow_threshold(route, answers, threshold, ev, short, evidence) if short else None
    if isinstance(raised, tuple):
        set_threshold(
            store, route.name, candidate, "shadow", st.version, st.dataset_id, *raised, evidence
        )
        return f"{candidate}: shadow, recalibrated: {raised[1]}"
    to: CandidateState
    if found == "pass":
        min_coverage = route.gate.min_coverage
        if min_coverage is not None and ev.coverage < min_coverage:
            to, why = "failed", f"{record}: coverage {ev.coverage:.2f} < {min_coverage}"
        else:
            to = "canary" if _canary_share(route, candidate) > 0 else "promoted"
            why = f"{record} ≥ {target}"
    elif found == "fail":
        to, why = "failed", raised or short or record
    else:
        hours = (datetime.now(UTC) - began).total_seconds() / 3600
        needs = max(min_n, ev.needed) if ev.needed is not None else None
        wants = f"needs {needs} at this agreement" if needs else "cannot reach it at this rate"
        if hours <= route.rollout.stage_timeout_h:
            note_once(
                store,
                route.name,
                candidate,
                "stage_waiting",
                st.version,
                f"shadow waits for evidence: {record} < {target}; {wants}",
                evidence,
            )
            return f"{candidate}: shadow, waiting: {record}; {wants}"
        to = "failed"
        why = (
            f"{record} < {target} after {hours:.0f} h "
            f"(rollout.stage_timeout_h {route.rollout.stage_timeout_h:g}); {wants}"
        )
    transition(store, route.name, candidate, to, why, evidence)
    return f"{candidate}: shadow → {to}: {why}"


def _shadow_threshold(
    route: Route,
    answers: list[Judged],
    threshold: float | None,
    ev: StageEvidence,
    short: str,
    evidence: dict[str, Any],
) -> tuple[float, str] | str | None:
    """A selective candidate whose kept shadow answers fall short of the target: the lowest
    higher confidence threshold whose kept answers' lower bound reaches it, with why, while
    that keeps `gate.min_coverage` of them; else why the stage fails (None: as it stands).
    A hand-set `escalation.min_confidence` is the route's and is never moved."""
    min_coverage = route.gate.min_coverage
    if min_coverage is None or threshold is None or route.escalation.min_confidence is not None:
        return None
    if any(a.confidence < 0 for a in answers):
        return None
    kept = [a for a in answers if a.confidence >= threshold]
    found = recalibrated(kept, route.gate.threshold, route.gate.confidence)
    if found is None:
        return f"{short}; no confidence threshold reaches it"
    raised, agree, n = found
    coverage = n / ev.seen if ev.seen else 0.0
    evidence.update(new_min_confidence=raised, kept=n, kept_agree=agree)
    evidence["coverage_after"] = round(coverage, 4)
    if coverage < min_coverage:
        return (
            f"{short}; at threshold {raised:.3f} it would keep {coverage:.0%} "
            f"< min_coverage {min_coverage:.0%}"
        )
    return raised, (
        f"{short}; threshold raised to {raised:.3f} ({agree}/{n} kept shadow answers agree, "
        f"{coverage:.0%} of them kept); the stage's evidence starts again at it"
    )


def note_once(
    store: Store,
    route: str,
    candidate: str,
    kind: str,
    version: str,
    why: str,
    evidence: dict[str, Any],
) -> None:
    """An event the distiller would otherwise write on every pass: once per run."""
    seen = store.query_rows(
        "SELECT count() FROM events WHERE route = {r:String} AND candidate = {c:String} "
        "AND kind = {k:String} AND JSONExtractString(evidence, 'run') = {v:String}",
        {"r": route, "c": candidate, "k": kind, "v": version},
    )
    if not seen or not seen[0][0]:
        record_event(store, route, candidate, kind, why, {**evidence, "run": version})


def _retire_dearer(store: Store, route: Route, prices: dict[str, Any]) -> list[str]:
    promoted = [
        c
        for c in route.candidates
        if (st := current(store, route.name, c.name)) and st.state == "promoted"
    ]
    if len(promoted) < 2 or not prices:
        return []

    def cost(c: Any) -> Any:  # the router's order: the cost of one request
        return prices[c.model].nominal_request(c.prompts_per_request)

    cheapest = min(promoted, key=cost)
    out = []
    for c in promoted:
        if c is not cheapest:
            why = f"{cheapest.name} passed and is cheaper"
            transition(store, route.name, c.name, "retired", why, {"replaced_by": cheapest.name})
            out.append(f"{c.name}: promoted → retired: {why}")
    return out
