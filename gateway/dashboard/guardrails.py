"""Guardrail rates: per route and rail, how often each blocked, flagged or masked, over the
date range and per bucket, with the rules that fired and the prompt-attack detectors in use.

Rails belong to a route, not an app: the app and team filters do not narrow these figures
(the rollup has no app column; the page says so).
"""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

from gateway.dashboard.filters import Filters
from gateway.dashboard.finance import bucket_of
from gateway.state import GatewayState
from store import Store

_WHERE = "hour >= {start:DateTime} AND hour < {end:DateTime}"

_BY_RAIL = f"""
SELECT route, rail, direction, action, sum(checks) AS checks, sum(hits) AS hits
FROM guardrails_hourly WHERE {_WHERE}
GROUP BY route, rail, direction, action ORDER BY route, rail, direction, action
"""

_BY_RULE = f"""
SELECT route, rail, rule, sum(hits) AS hits
FROM guardrails_hourly WHERE {_WHERE} AND rule != ''
GROUP BY route, rail, rule ORDER BY hits DESC LIMIT 200
"""


def _rate(hits: int, checks: int) -> Decimal | None:
    return Decimal(hits * 100) / Decimal(checks) if checks else None


def _pct(x: Decimal | None) -> Decimal | None:
    return None if x is None else x.quantize(Decimal("0.01"))


def rates(store: Store, f: Filters) -> dict[str, Any]:
    params = f.params()
    by_rail = []
    for r in store.query_dicts(_BY_RAIL, params):
        checks, hits = int(r["checks"]), int(r["hits"])
        by_rail.append({**r, "checks": checks, "hits": hits, "hit_pct": _pct(_rate(hits, checks))})
    by_rule = [{**r, "hits": int(r["hits"])} for r in store.query_dicts(_BY_RULE, params)]
    bucket = bucket_of(f)
    expr = "hour" if bucket == "hour" else "toStartOfDay(hour)"
    rows = store.query_dicts(
        f"SELECT {expr} AS bucket, route, rail, action, sum(checks) AS checks, sum(hits) AS hits "
        f"FROM guardrails_hourly WHERE {_WHERE} GROUP BY bucket, route, rail, action "
        "ORDER BY bucket",
        params,
    )
    keys = sorted({(r["route"], r["rail"], r["action"]) for r in rows})
    found = {(r["bucket"].replace(tzinfo=UTC), r["route"], r["rail"], r["action"]): r for r in rows}
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    start = f.start if bucket == "hour" else f.start.replace(hour=0)
    series = []
    t = start
    while t < f.end:
        for route, rail, action in keys:
            got = found.get((t, route, rail, action))
            checks, hits = (int(got["checks"]), int(got["hits"])) if got else (0, 0)
            series.append(
                {
                    "bucket": t.isoformat(),
                    "route": route,
                    "rail": rail,
                    "action": action,
                    "checks": checks,
                    "hits": hits,
                    "hit_pct": _pct(_rate(hits, checks)),
                }
            )
        t += step
    return {"bucket": bucket, "by_rail": by_rail, "by_rule": by_rule, "series": series}


def detectors(state: GatewayState) -> list[dict[str, Any]]:
    """The prompt-attack detector and threshold each route is serving with now."""
    out = []
    for route, rails in sorted(state.router.rails.items()):
        for index, check in sorted(rails.attack_checks.items()):
            rail = rails.spec.input[index]
            out.append(
                {
                    "route": route,
                    "detector": check.name,
                    "version": check.detector.version if check.detector else "",
                    "action": rail.action,
                    "threshold": round(check.threshold, 6) if check.detector else None,
                    "target_fpr": rail.target_fpr,
                    "threshold_from": check.threshold_from,
                }
            )
    return out
