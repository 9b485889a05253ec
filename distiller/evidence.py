"""The evidence a rollout stage reads, and how much of it a target needs.

A stage passes when the Wilson lower bound of agreement reaches the target, fails when the
upper bound is below it (no amount of further evidence would pass it), and otherwise waits
for more, up to `rollout.stage_timeout_h`. `needed_examples` is the sample size at which
the observed agreement's lower bound would reach the target: what a stage waits for, and
what `flywheel policy check` compares with a route's windows.

Invariant: evidence belongs to one run. Shadow answers and audits count only from the time
the candidate's current version (its run) first entered the rollout, so a retrained run is
never promoted, or rolled back, on its predecessor's record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

import orjson

from contracts.agreement import agreement, wilson_bounds
from contracts.openai_shapes import answer_text
from contracts.policy import Route
from distiller.evaluation import AGREE_AT
from store import Store

Verdict = Literal["pass", "fail", "wait"]


def needed_examples(
    agreement_rate: float, target: float, confidence: float = 0.95, cap: int = 10_000_000
) -> int | None:
    """The fewest examples at which `agreement_rate` has a lower bound ≥ `target`; None
    when no number would do (the rate is not above the target)."""
    if agreement_rate <= target:
        return None

    def enough(n: int) -> bool:
        return wilson_bounds(agreement_rate * n, n, confidence)[0] >= target

    hi = 1
    while not enough(hi):
        hi *= 2
        if hi > cap:
            return None
    lo = hi // 2
    while lo + 1 < hi:  # the lower bound grows with n at a fixed rate: bisect
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class StageEvidence:
    agree: int
    n: int  # judged answers (a selective candidate's: those it would keep)
    seen: int  # every answer, kept or not
    lower: float
    upper: float
    needed: int | None  # examples the observed agreement needs to pass; None: it cannot
    min_confidence: float | None = None  # the threshold it was judged at

    @property
    def coverage(self) -> float:
        return self.n / self.seen if self.seen else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "agree": self.agree,
            "n": self.n,
            "seen": self.seen,
            "coverage": round(self.coverage, 4),
            "wilson_lower": round(self.lower, 4),
            "wilson_upper": round(self.upper, 4),
            "needed": self.needed,
        }


def judge(agree: int, n: int, seen: int, target: float, confidence: float) -> StageEvidence:
    lower, upper = wilson_bounds(agree, n, confidence)
    # With no disagreement yet, the sample size is a perfect record's.
    rate = agree / n if n else 1.0
    return StageEvidence(agree, n, seen, lower, upper, needed_examples(rate, target, confidence))


def verdict(ev: StageEvidence, min_examples: int, target: float) -> Verdict:
    if ev.n >= min_examples and ev.lower >= target:
        return "pass"
    if ev.n >= min_examples and ev.upper < target:
        return "fail"
    return "wait"


def entered(
    store: Store,
    route: str,
    candidate: str,
    version: str,
    state: str | None = None,
    latest: bool = False,
) -> datetime:
    """When the run `version` entered the rollout (or, given `state`, that stage); with
    `latest`, its last row in that stage (a recalibration writes one: evidence at the new
    threshold starts there)."""
    rows = store.query_rows(
        f"SELECT {'max' if latest else 'min'}(updated_at) FROM candidate_states "
        "WHERE route = {r:String} AND candidate = {c:String} AND version = {v:String}"
        + (" AND state = {s:String}" if state else ""),
        {"r": route, "c": candidate, "v": version, "s": state or ""},
    )
    at = rows[0][0] if rows else None
    if not isinstance(at, datetime):
        return datetime.now(UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Judged:
    """One answer the teacher's answer judged: whether they agree, and the candidate's
    confidence in it (-1: not measured)."""

    agree: bool
    confidence: float


def shadow_answers(store: Store, route: Route, candidate: str, since: datetime) -> list[Judged]:
    """Shadow answers since `since`, each against the teacher's answer it shadowed."""
    rows = store.query_rows(
        "SELECT s.response, p.response, s.confidence FROM requests AS s "
        "INNER JOIN requests AS p ON p.request_id = toUUIDOrZero(s.parent_id) "
        "WHERE s.kind = 'shadow' AND s.route = {r:String} AND s.candidate = {c:String} "
        "AND s.status = 'ok' AND p.status = 'ok' AND p.served_by = 'teacher' "
        "AND s.started_at >= {since:DateTime64(3)}",
        {"r": route.name, "c": candidate, "since": since.astimezone(UTC).replace(tzinfo=None)},
    )
    out = []
    for shadow, teacher, confidence in rows:
        s = answer_text(orjson.loads(shadow or "{}") or {})
        t = answer_text(orjson.loads(teacher or "{}") or {})
        if route.gate.metric == "llm_judge":
            score = agreement("chrf", s, t)  # shadows are judged offline by similarity
        else:
            score = agreement(route.gate.metric, s, t, route.gate.fields)
        out.append(Judged(score >= AGREE_AT, float(confidence)))
    return out


def judge_kept(answers: list[Judged], route: Route, min_confidence: float | None) -> StageEvidence:
    """The stage's evidence: with a `min_confidence`, an answer below it is one the router
    would have escalated: it counts toward coverage, not agreement."""
    kept = [a for a in answers if min_confidence is None or a.confidence >= min_confidence]
    agree = sum(a.agree for a in kept)
    ev = judge(agree, len(kept), len(answers), route.gate.threshold, route.gate.confidence)
    return replace(ev, min_confidence=min_confidence)


def shadow_evidence(
    store: Store, route: Route, candidate: str, since: datetime, min_confidence: float | None
) -> StageEvidence:
    """Shadow answers since `since` against the teacher's answers they shadowed, judged on
    those the candidate would keep at `min_confidence`."""
    return judge_kept(shadow_answers(store, route, candidate, since), route, min_confidence)


def certified_kept(store: Store, run_id: str, min_confidence: float | None) -> tuple[int, int]:
    """(agreeing, kept): the eval answers the run's gate measured that it keeps at
    `min_confidence` (all of them without one), of the rows that certified it (not those that
    chose its threshold) in its latest report (a re-certification's, after the teacher
    changed); (0, 0) with no eval results."""
    rows = store.query_rows(
        "WITH (SELECT argMax(eval_set_id, created_at) FROM eval_reports "
        "WHERE run_id = {r:String}) AS latest "
        "SELECT sumIf(toUInt32(agree), confidence >= {t:Float64}), "
        "countIf(confidence >= {t:Float64}) FROM eval_results WHERE run_id = {r:String} "
        "AND role != 'calibrate' AND (latest = '' OR eval_set_id = latest)",
        {"r": run_id, "t": -2.0 if min_confidence is None else min_confidence},
    )
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


def behind_certified(agree: int, n: int, certified: tuple[int, int], confidence: float) -> str:
    """Why live agreement contradicts the certified one (else ''): the two intervals do not
    meet, the live upper bound below the certified lower bound. Only then does the traffic
    agree less than the eval set did; a live record merely short of the target's bound
    after the answers the certified figure would need is what chance gives half the time."""
    c_agree, c_kept = certified
    if not n or not c_kept:
        return ""
    live_upper = wilson_bounds(agree, n, confidence)[1]
    c_lower = wilson_bounds(c_agree, c_kept, confidence)[0]
    if live_upper >= c_lower:
        return ""
    return (
        f"below what was certified ({c_agree}/{c_kept}, lower bound {c_lower:.3f} > live "
        f"upper bound {live_upper:.3f}): the traffic agrees less than the eval set did"
    )


def recalibrated(
    answers: list[Judged], target: float, confidence: float
) -> tuple[float, int, int] | None:
    """The lowest confidence threshold at which the judged answers above it have a lower
    bound ≥ target, with (agreeing, kept) there; None when no threshold reaches it."""
    for t in sorted({a.confidence for a in answers}):
        kept = [a for a in answers if a.confidence >= t]
        agree = sum(a.agree for a in kept)
        if wilson_bounds(agree, len(kept), confidence)[0] >= target:
            return t, agree, len(kept)
    return None


def rollout_notes(route: Route) -> list[str]:
    """What `flywheel policy check` says of a route's rollout: the evidence each stage
    needs, and a stage that cannot pass as configured (prefixed `cannot pass:`)."""
    if not route.candidates:
        return []
    gate, rollout, audit = route.gate, route.rollout, route.audit
    out: list[str] = []
    perfect = needed_examples(1.0, gate.threshold, gate.confidence)
    if rollout.shadow_share > 0:
        if perfect is None:
            out.append(
                f"cannot pass: shadow needs a lower bound ≥ gate.threshold {gate.threshold}, "
                "which no record reaches"
            )
        else:
            need = max(perfect, rollout.shadow_min_examples)
            kept = f" kept (min_coverage {gate.min_coverage})" if gate.min_coverage else ""
            share = gate.min_coverage or 1.0
            out.append(
                f"shadow needs ≥ {need} answers{kept} for a lower bound ≥ {gate.threshold} at "
                f"confidence {gate.confidence} (a perfect record): about "
                f"{math.ceil(need / (share * rollout.shadow_share))} requests at shadow_share "
                f"{rollout.shadow_share}, within stage_timeout_h {rollout.stage_timeout_h:g}"
            )
    if any(route.canary_share(c) > 0 for c in route.candidates):
        perfect_audits = needed_examples(1.0, route.audit_target(), gate.confidence)
        if perfect_audits is None:
            out.append(
                f"cannot pass: canary needs a lower bound ≥ the audit target "
                f"{route.audit_target()}, which no record reaches"
            )
        else:
            need = max(perfect_audits, rollout.canary_min_examples)
            shares = [route.canary_share(c) for c in route.candidates]
            per = max(shares) * audit.canary_share * (gate.min_coverage or 1.0)
            about = (
                f": about {math.ceil(need / per)} requests at canary_share {max(shares):g} "
                f"and audit.canary_share {audit.canary_share:g}"
                if per > 0
                else ""
            )
            out.append(
                f"canary needs ≥ {need} audits for a lower bound ≥ the audit target "
                f"{route.audit_target()} (a perfect record){about}, within stage_timeout_h "
                f"{rollout.stage_timeout_h:g}"
            )
    return out
