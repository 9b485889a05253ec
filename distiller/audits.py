"""What a canary or promoted candidate's audits decide: promote, wait, recalibrate, or roll
back.

The audits are of this run's served answers only (`evidence.entered`) whose answer the
candidate would still serve at its current confidence threshold: in canary every audit
since it entered the stage (or since its last recalibration: the audits that chose a
threshold do not prove it), since promotion needs the evidence its target needs, however
much that is; once promoted, the last `audit.window` of them (a recent record). Their
agreement is held to the route's audit target (`audit.min_agreement`, by default the gate's
`threshold`: the figure the gate certified):

- canary → promoted once at least `canary_min_examples` audits put the Wilson lower bound
  at or above the target (and latency does not hold it; `promotion.latency_hold`); until
  then the stage waits, noting once how many audits it needs; when it outlives
  `rollout.stage_timeout_h` (counted from entering the stage or its last recalibration)
  without them, its agreement sits too close to the target to prove it: it is treated as
  short of the target (below), so a selective candidate keeps serving at a threshold its
  audits prove, saying what it needed, and anything else is rolled back; when its audited
  upper bound falls below the lower bound of the kept agreement its gate certified (the
  traffic agrees less than the eval set did), it is treated as short of the target (below);
- when the upper bound falls below the target (the audits show the served answers agree
  less than promised), a selective candidate is first recalibrated: its threshold rises to
  the lowest audited confidence at which the lower bound over the answers above it reaches
  the target, provided that still serves `gate.min_coverage` of the traffic; only when no
  threshold does is it rolled back, as a candidate without a gate-fitted threshold is.

Invariant: every decision is a `candidate_states` row and an `events` row with its
evidence; a recalibration keeps the state and run and changes only `min_confidence`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts.policy import Route
from distiller.evaluation import AGREE_AT
from distiller.evidence import (
    Judged,
    behind_certified,
    certified_kept,
    entered,
    judge,
    recalibrated,
)
from store import Store

_AUDITS = """
SELECT a.agreement AS agreement, r.confidence AS confidence
FROM audits AS a
LEFT JOIN (
    SELECT request_id, confidence FROM requests
    WHERE route = {r:String} AND kind = 'request' AND started_at >= {since:DateTime64(3)}
) AS r ON r.request_id = a.request_id
WHERE a.route = {r:String} AND a.candidate = {c:String} AND a.at >= {since:DateTime64(3)}
ORDER BY a.at DESC
LIMIT {n:UInt32}
"""

# The candidate's share of the requests it was offered: served, or escalated as unsure.
_SERVED_SHARE = """
SELECT countIf(kind = 'request' AND served_by = 'student') AS served,
       countIf(kind = 'escalated') AS escalated
FROM requests
WHERE route = {r:String} AND candidate = {c:String} AND started_at >= {since:DateTime64(3)}
"""


# A canary's record is all of its audits since it entered the stage; this only bounds a
# query (at a 0.97 target a 98% record needs ~1,150 audits).
CANARY_AUDITS = 1_000_000


def audited(
    store: Store,
    route: Route,
    candidate: str,
    since: datetime,
    threshold: float | None,
    limit: int,
) -> list[Judged]:
    """This run's last `limit` audits since `since` of answers it would still serve."""
    naive = since.astimezone(UTC).replace(tzinfo=None)
    rows = store.query_dicts(_AUDITS, {"r": route.name, "c": candidate, "since": naive, "n": limit})
    out = [Judged(float(r["agreement"]) >= AGREE_AT, float(r["confidence"])) for r in rows]
    if threshold is None:
        return out
    return [a for a in out if a.confidence >= threshold]


def served_share(store: Store, route: str, candidate: str, since: datetime) -> float:
    row = store.query_dicts(
        _SERVED_SHARE,
        {"r": route, "c": candidate, "since": since.astimezone(UTC).replace(tzinfo=None)},
    )[0]
    served, escalated = int(row["served"]), int(row["escalated"])
    return served / (served + escalated) if served + escalated else 1.0


@dataclass(frozen=True)
class AuditCall:
    """What the audits decided: `promote`, `wait`, `recalibrate` (to `threshold`),
    `roll_back` or `keep`, with why and the evidence."""

    action: str
    why: str
    evidence: dict[str, Any]
    threshold: float | None = None


def decide(
    store: Store,
    route: Route,
    candidate: str,
    state: str,
    version: str,
    gate_threshold: float | None,
) -> AuditCall | None:
    """The audits' verdict on a canary or promoted candidate; None with no audits yet.
    `gate_threshold`: the confidence its selective gate fitted (movable); a hand-set
    `escalation.min_confidence` is the route's and is never moved."""
    fixed = route.escalation.min_confidence
    threshold = route.escalation_threshold(gate_threshold)
    if state == "canary":
        since = entered(store, route.name, candidate, version, "canary", latest=True)
        audits = audited(store, route, candidate, since, threshold, CANARY_AUDITS)
    else:
        since = entered(store, route.name, candidate, version)
        audits = audited(store, route, candidate, since, threshold, route.audit.window)
    if not audits:
        return None
    target, z = route.audit_target(), route.gate.confidence
    agree = sum(a.agree for a in audits)
    ev = judge(agree, len(audits), len(audits), target, z)
    evidence: dict[str, Any] = {
        **ev.as_dict(),
        "target": target,
        "min_confidence": threshold,
        "agreement": round(agree / len(audits), 4),
        "audits": len(audits),
    }
    record = f"audited agreement {agree}/{len(audits)} (bounds {ev.lower:.3f}–{ev.upper:.3f})"
    min_n = route.rollout.canary_min_examples
    if ev.upper < target and len(audits) >= min(route.audit.window, min_n):
        short = f"{record}: upper bound < {target}"
        return _short_of_target(store, route, candidate, since, audits, short, evidence, fixed)
    if state == "canary":
        if len(audits) >= min_n and ev.lower >= target:
            return AuditCall("promote", f"{record} ≥ {target}", evidence)
        certified = certified_kept(store, version, threshold)
        if len(audits) >= min_n and (behind := behind_certified(agree, len(audits), certified, z)):
            short = f"{record} < {target}: {behind}"
            return _short_of_target(store, route, candidate, since, audits, short, evidence, fixed)
        needs = max(min_n, ev.needed) if ev.needed is not None else None
        wants = f"needs {needs} audits at this agreement" if needs else "cannot reach it"
        # The clock restarts at a recalibration: the new threshold gets its own stage time.
        hours = (datetime.now(UTC) - since).total_seconds() / 3600
        if hours > route.rollout.stage_timeout_h:
            short = (
                f"{record} < {target} after {hours:.0f} h "
                f"(rollout.stage_timeout_h {route.rollout.stage_timeout_h:g}); {wants}"
            )
            if len(audits) < min_n:
                return AuditCall("roll_back", short, evidence)
            return _short_of_target(store, route, candidate, since, audits, short, evidence, fixed)
        return AuditCall("wait", f"{record}, target {target}: {wants}", evidence)
    return AuditCall("keep", record, evidence)


def _short_of_target(
    store: Store,
    route: Route,
    candidate: str,
    since: datetime,
    audits: list[Judged],
    short: str,
    evidence: dict[str, Any],
    fixed: float | None,
) -> AuditCall:
    """Raise a selective candidate's threshold, or roll it back; `short`: why."""
    target = route.audit_target()
    selective = route.gate.min_coverage is not None and fixed is None
    if not selective or any(a.confidence < 0 for a in audits):
        return AuditCall("roll_back", short, evidence)
    found = recalibrated(audits, target, route.gate.confidence)
    if found is None:
        return AuditCall("roll_back", f"{short}; no confidence threshold reaches it", evidence)
    threshold, agree, kept = found
    coverage = served_share(store, route.name, candidate, since) * kept / len(audits)
    evidence.update(new_min_confidence=threshold, kept=kept, kept_agree=agree)
    evidence["coverage_after"] = round(coverage, 4)
    min_coverage = route.gate.min_coverage or 0.0
    if coverage < min_coverage:
        return AuditCall(
            "roll_back",
            f"{short}; at threshold {threshold:.3f} it would serve {coverage:.0%} "
            f"< min_coverage {min_coverage:.0%}",
            evidence,
        )
    return AuditCall(
        "recalibrate",
        f"{short}; threshold raised to {threshold:.3f} ({agree}/{kept} kept audits agree, "
        f"about {coverage:.0%} of traffic still served)",
        evidence,
        threshold,
    )
