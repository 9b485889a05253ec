"""Quality next to savings: per route and candidate, the sampled teacher audits in the date
range, the latest offline evaluation, the candidate's state, and the route's savings.
`below_certified` flags a candidate whose audits show users get less than its evaluation
certified: the upper 95% bound of audited agreement under the evaluated agreement.

Audits and evaluations belong to a route and a candidate, not to an app: the app and team
filters narrow the route's savings but not its quality figures (the page says so).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from contracts.agreement import wilson_bounds
from gateway.dashboard.filters import Filters
from store import Store

_AUDITS = """
SELECT route, candidate, sum(audits) AS audits, sum(agreement_sum) AS agreement_sum,
       sum(agreed) AS agreed
FROM audits_hourly
WHERE hour >= {start:DateTime} AND hour < {end:DateTime}
GROUP BY route, candidate
"""

_EVALS = """
SELECT route, candidate, argMax(agreement, created_at) AS agreement,
       argMax(wilson_lower, created_at) AS wilson_lower,
       argMax(examples, created_at) AS examples, argMax(passed, created_at) AS passed,
       argMax(eval_set_id, created_at) AS eval_set_id, argMax(metric, created_at) AS metric,
       argMax(coverage, created_at) AS coverage
FROM eval_reports GROUP BY route, candidate
"""

# What the latest evaluation certified of the answers users get: a selective candidate's
# agreement on the eval answers it keeps at its chosen threshold, else the whole set's; only
# rows that certified (not those that chose the threshold).
_CERTIFIED = """
SELECT e.route AS route, e.candidate AS candidate,
       avgIf(toFloat64(r.agree), r.confidence >= ifNull(e.min_confidence, -2.0)) AS certified
FROM (
    SELECT route, candidate, argMax(run_id, created_at) AS run_id,
           argMax(eval_set_id, created_at) AS eval_set_id,
           argMax(min_confidence, created_at) AS min_confidence
    FROM eval_reports GROUP BY route, candidate
) AS e
INNER JOIN eval_results AS r ON r.run_id = e.run_id AND r.eval_set_id = e.eval_set_id
WHERE r.role != 'calibrate'
GROUP BY e.route, e.candidate
"""

_STATES = """
SELECT route, candidate, argMax(state, updated_at) AS state,
       argMax(version, updated_at) AS version,
       argMax(min_confidence, updated_at) AS escalate_below
FROM candidate_states GROUP BY route, candidate
"""


def _pct(x: float | None) -> Decimal | None:
    return None if x is None else Decimal(str(round(x * 100, 2)))


def quality_by_candidate(
    store: Store, f: Filters, by_route: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`by_route`: the finance breakdown by route for the same filters (its savings are
    shown beside each candidate)."""
    params = f.params()
    keyed: dict[tuple[str, str], dict[str, Any]] = {}

    def row(route: str, candidate: str) -> dict[str, Any]:
        return keyed.setdefault(
            (route, candidate),
            {
                "route": route,
                "candidate": candidate,
                "state": "",
                "audits": 0,
                "audit_agreement_pct": None,
                "eval_agreement_pct": None,
                "eval_wilson_lower_pct": None,
                "eval_examples": 0,
                "eval_passed": None,
                "eval_set_id": "",
                "eval_coverage_pct": None,
                "escalate_below": None,
                "certified_pct": None,
                "below_certified": "",
            },
        )

    for r in store.query_dicts(_STATES, {}):
        below = r["escalate_below"]
        row(r["route"], r["candidate"]).update(
            state=r["state"], escalate_below=None if below is None else round(float(below), 4)
        )
    for r in store.query_dicts(_EVALS, {}):
        row(r["route"], r["candidate"]).update(
            eval_agreement_pct=_pct(float(r["agreement"])),
            eval_wilson_lower_pct=_pct(float(r["wilson_lower"])),
            eval_examples=int(r["examples"]),
            eval_passed=bool(r["passed"]),
            eval_set_id=r["eval_set_id"],
            eval_coverage_pct=_pct(float(r["coverage"])),
        )
    for r in store.query_dicts(_CERTIFIED, {}):
        row(r["route"], r["candidate"])["certified_pct"] = _pct(float(r["certified"]))
    for r in store.query_dicts(_AUDITS, params):
        n = int(r["audits"])
        found = row(r["route"], r["candidate"])
        found.update(
            audits=n,
            audit_agreement_pct=_pct(float(r["agreement_sum"]) / n) if n else None,
        )
        certified = found.get("certified_pct")
        upper = wilson_bounds(int(r["agreed"]), n)[1]
        if n and certified is not None and Decimal(str(upper * 100)) < certified:
            found["below_certified"] = (
                f"audited {found['audit_agreement_pct']}% over {n} audits (upper bound "
                f"{upper * 100:.1f}%) < certified {certified}%"
            )
    savings = {r["route"]: r for r in by_route}
    out = []
    for (route, _), r in sorted(keyed.items()):
        route_row = savings.get(route)
        r["route_savings_usd"] = route_row["savings_usd"] if route_row else Decimal(0)
        r["route_savings_pct"] = route_row["savings_pct"] if route_row else None
        out.append(r)
    return out
