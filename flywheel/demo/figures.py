"""The demo's summary, read from ClickHouse: the steady state after promotion first (what a
user came for), then the whole run with the flywheel's own overhead, then the open-ended
workload that stayed on the teacher.

Invariant: money is summed by ClickHouse as Decimal(18, 9) and divided here as Decimal; the
demo test recomputes the same figures from the rows and must get the same strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flywheel.demo.config import CANDIDATE, ROUTE
from store import Store

STEADY_SQL = """
SELECT countIf(kind = 'request') AS requests,
       countIf(kind = 'request' AND served_by = 'student') AS by_student,
       sumIf(cost_usd, kind = 'request') AS served_usd,
       sumIf(cost_usd, kind != 'request') AS overhead_usd,
       sumIf(baseline_cost_usd, kind = 'request') AS baseline_usd
FROM requests
WHERE route = {r:String} AND started_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
"""
STEADY_AUDITS_SQL = """
SELECT count() AS n, avg(agreement) AS agreement FROM audits
WHERE route = {r:String} AND candidate = {c:String}
  AND at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
"""
RUN_SQL = """
SELECT route, countIf(kind = 'request') AS requests,
       countIf(kind = 'request' AND served_by = 'student') AS by_student,
       groupUniqArrayIf(served_by, kind = 'request') AS served_by_list,
       sum(cost_usd) AS spend_usd, sumIf(cost_usd, kind != 'request') AS overhead_usd,
       sumIf(baseline_cost_usd, kind = 'request') AS baseline_usd
FROM requests GROUP BY route ORDER BY route
"""
AUDITS_SQL = (
    "SELECT count() AS n, avg(agreement) AS agreement FROM audits "
    "WHERE route = {r:String} AND candidate = {c:String}"
)


def _d(value: Any) -> Decimal:
    return Decimal(str(value or 0))


def per_thousand(total: Decimal, n: int) -> Decimal:
    return (total / n * 1000).quantize(Decimal("0.000001")) if n else Decimal(0)


def cut_percent(spend: Decimal, baseline: Decimal) -> Decimal:
    return ((1 - spend / baseline) * 100).quantize(Decimal("0.1")) if baseline else Decimal(0)


def steady_state(store: Store, promoted_at: float) -> dict[str, Any]:
    """Users' requests on the routine workload since the student was promoted."""
    since = int(promoted_at * 1000)
    row = store.query_dicts(STEADY_SQL, {"r": ROUTE, "since": since})[0]
    audits = store.query_dicts(STEADY_AUDITS_SQL, {"r": ROUTE, "c": CANDIDATE, "since": since})[0]
    n = int(row["requests"])
    spend = _d(row["served_usd"]) + _d(row["overhead_usd"])
    baseline = _d(row["baseline_usd"])
    return {
        "requests": n,
        "student_share": int(row["by_student"]) / n if n else 0.0,
        "audits": int(audits["n"]),
        "audit_agreement": float(audits["agreement"] or 0) if int(audits["n"]) else None,
        "cost_per_1000_usd": str(per_thousand(spend, n)),
        "teacher_cost_per_1000_usd": str(per_thousand(baseline, n)),
        "cut_percent": str(cut_percent(spend, baseline)),
        "overhead_usd": str(_d(row["overhead_usd"])),
    }


def whole_run(store: Store) -> dict[str, Any]:
    routes = {}
    spend = baseline = overhead = Decimal(0)
    for r in store.query_dicts(RUN_SQL, {}):
        n = int(r["requests"])
        routes[r["route"]] = {
            "requests": n,
            "student_share": int(r["by_student"]) / n if n else 0.0,
            "served_by": sorted(r["served_by_list"]),
            "spend_usd": str(_d(r["spend_usd"])),
            "baseline_usd": str(_d(r["baseline_usd"])),
        }
        spend += _d(r["spend_usd"])
        baseline += _d(r["baseline_usd"])
        overhead += _d(r["overhead_usd"])
    audits = store.query_dicts(AUDITS_SQL, {"r": ROUTE, "c": CANDIDATE})[0]
    return {
        "routes": routes,
        "spend_usd": str(spend),
        "baseline_usd": str(baseline),
        "overhead_usd": str(overhead),
        "savings_percent": str(cut_percent(spend, baseline)),
        "audits": int(audits["n"]),
        "audit_agreement": float(audits["agreement"] or 0) if int(audits["n"]) else None,
    }
