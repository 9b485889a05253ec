"""Finance figures from the ClickHouse rollups: spend, the teacher baseline, savings.

Definitions (the same in the page, the JSON, the CSV, `flywheel report` and Grafana):
- spend: everything paid for, i.e. users' requests plus the flywheel's own calls (shadow
  copies, teacher audits, escalated and rejected student answers);
- baseline: what the users' requests would have cost on their route's teacher;
- savings = baseline - spend, and savings % = savings / baseline;
- student share: users' requests answered by a student, over all users' requests;
- by lever: the same figures grouped by who answered (`student`: a fine-tuned candidate,
  `few_shot`: a few-shot candidate, `cache`, `teacher`): what each cost lever saved (the
  teacher's rows carry the audits' and shadows' spend).

Invariant: money is summed by ClickHouse as Decimal(38, 9) and stays `Decimal` here, so every
figure is exact to the nano-dollar; only the projection divides, and it says it is an estimate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from contracts.policy import PolicySet
from gateway.dashboard.filters import Filters
from store import Store

# `lever`: who answered (student, few_shot, cache, teacher): savings by cost lever. A
# few-shot candidate's rows are a student's served by a model the policy's few-shot
# candidates use (`Filters.few_shot_models`).
DIMENSIONS = {
    "app": "app",
    "team": "team",
    "model": "served_model",
    "route": "route",
    "lever": "if(t.served_by = 'student' AND has({few_shot_models:Array(String)}, "
    "t.served_model), 'few_shot', t.served_by)",
}


def few_shot_models(policies: PolicySet) -> tuple[str, ...]:
    return tuple(
        sorted({c.model for r in policies.routes for c in r.candidates if c.kind == "few_shot"})
    )


PCT = Decimal("0.01")
MICRO = Decimal("0.000001")

_SUMS = """
    sum(t.requests) AS requests,
    sumIf(t.requests, t.kind = 'request') AS user_requests,
    sumIf(t.requests, t.kind = 'request' AND t.served_by = 'student') AS student_requests,
    sum(t.input_tokens) AS input_tokens,
    sum(t.cached_input_tokens) AS cached_input_tokens,
    sum(t.output_tokens) AS output_tokens,
    sum(t.cost_usd) AS spend_usd,
    sumIf(t.cost_usd, t.kind != 'request') AS overhead_usd,
    sum(t.baseline_cost_usd) AS baseline_usd
"""
# (Columns are qualified with `t.`: ClickHouse resolves a bare name to a same-named alias.)


_ZERO = (
    "requests",
    "user_requests",
    "student_requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "spend_usd",
    "overhead_usd",
    "baseline_usd",
)


def _money(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(str(v or 0))


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    """Derived figures of one aggregate row; money as exact Decimal."""
    spend, baseline = _money(row["spend_usd"]), _money(row["baseline_usd"])
    savings = baseline - spend
    users = int(row["user_requests"])
    out = {k: v for k, v in row.items() if k not in ("spend_usd", "baseline_usd", "overhead_usd")}
    out.update(
        requests=int(row["requests"]),
        user_requests=users,
        student_requests=int(row["student_requests"]),
        input_tokens=int(row["input_tokens"]),
        # Of the prompt tokens, the share the provider read from its prompt cache (billed at
        # its cache rate; coding agents' long prompts are mostly cached).
        cached_input_tokens=int(row["cached_input_tokens"]),
        cached_input_pct=(
            (Decimal(int(row["cached_input_tokens"])) * 100 / int(row["input_tokens"])).quantize(
                PCT
            )
            if int(row["input_tokens"])
            else None
        ),
        output_tokens=int(row["output_tokens"]),
        spend_usd=spend,
        overhead_usd=_money(row["overhead_usd"]),
        baseline_usd=baseline,
        savings_usd=savings,
        savings_pct=(savings * 100 / baseline).quantize(PCT) if baseline else None,
        student_share_pct=(
            (Decimal(int(row["student_requests"])) * 100 / users).quantize(PCT) if users else None
        ),
    )
    return out


def totals(store: Store, f: Filters) -> dict[str, Any]:
    rows = store.query_dicts(f"SELECT {_SUMS} FROM spend_hourly AS t WHERE {f.sql()}", f.params())
    return _finish(rows[0])


def breakdown(store: Store, f: Filters, dimension: str) -> list[dict[str, Any]]:
    column = DIMENSIONS[dimension]
    rows = store.query_dicts(
        f"SELECT {column} AS {dimension}, {_SUMS} FROM spend_hourly AS t WHERE {f.sql()} "
        f"GROUP BY {column} ORDER BY spend_usd DESC, {dimension}",
        f.params(),
    )
    return [_finish(r) for r in rows]


def bucket_of(f: Filters) -> str:
    return "hour" if f.end - f.start <= timedelta(days=3) else "day"


def series(store: Store, f: Filters) -> list[dict[str, Any]]:
    """Per hour for ranges up to 3 days, else per day (UTC)."""
    expr = "hour" if bucket_of(f) == "hour" else "toStartOfDay(hour)"
    rows = store.query_dicts(
        f"SELECT {expr} AS bucket, {_SUMS} FROM spend_hourly AS t WHERE {f.sql()} "
        "GROUP BY bucket ORDER BY bucket",
        f.params(),
    )
    by_bucket = {r["bucket"].replace(tzinfo=UTC): r for r in rows}
    # Every bucket of the range is present (empty ones as zeros): charts show gaps as zero.
    step = timedelta(hours=1) if bucket_of(f) == "hour" else timedelta(days=1)
    t = f.start if step.days == 0 else f.start.replace(hour=0)
    out = []
    while t < f.end:
        row = by_bucket.get(t) or {k: 0 for k in _ZERO}
        out.append(_finish({**row, "bucket": t.isoformat()}))
        t += step
    return out


def series_split(store: Store, f: Filters, dimension: str) -> list[dict[str, Any]]:
    """Spend, baseline and savings per bucket and per app, team, model or route (only the
    buckets and keys that have rows)."""
    column = DIMENSIONS[dimension]
    expr = "hour" if bucket_of(f) == "hour" else "toStartOfDay(hour)"
    rows = store.query_dicts(
        f"SELECT {expr} AS bucket, {column} AS {dimension}, {_SUMS} FROM spend_hourly AS t "
        f"WHERE {f.sql()} GROUP BY bucket, {column} ORDER BY bucket, {dimension}",
        f.params(),
    )
    out = []
    for r in rows:
        r["bucket"] = r["bucket"].replace(tzinfo=UTC).isoformat()
        out.append(_finish(r))
    return out


def projection(store: Store, f: Filters, now: datetime | None = None) -> dict[str, Any]:
    """This calendar month (UTC) at the current rate: month-to-date plus the trailing
    7 days' hourly rate (or the rate since the first row ever, if newer) times the hours
    left.
    Apps and teams filter it; the date range does not."""
    now = now or datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month + timedelta(days=32)).replace(day=1)
    hour_now = now.replace(minute=0, second=0, microsecond=0)
    mtd = totals(store, f.model_copy(update={"start": month, "end": next_month}))
    window_start = now - timedelta(days=7)
    # Traffic that began less than 7 days ago: its rate is over the time since it began.
    first = store.query_rows(
        f"SELECT min(hour), count() FROM spend_hourly AS t WHERE {f.sql()}",
        {**f.params(), "start": datetime(1970, 1, 2), "end": now.replace(tzinfo=None)},
    )
    if first and int(first[0][1]) and first[0][0] is not None:
        window_start = max(window_start, first[0][0].replace(tzinfo=UTC))
    window = f.model_copy(update={"start": window_start, "end": hour_now + timedelta(hours=1)})
    recent = totals(store, window)
    hours = max(Decimal((now - window_start).total_seconds()) / 3600, Decimal(1))
    left = Decimal((next_month - now).total_seconds()) / 3600

    def project(field: str) -> Decimal:
        rate = _money(recent[field]) / hours
        return (_money(mtd[field]) + rate * left).quantize(MICRO)

    spend, baseline = project("spend_usd"), project("baseline_usd")
    return {
        "month": month.strftime("%Y-%m"),
        "as_of": now.isoformat(),
        "month_to_date_spend_usd": mtd["spend_usd"],
        "month_to_date_baseline_usd": mtd["baseline_usd"],
        "month_to_date_savings_usd": mtd["savings_usd"],
        "rate_window_hours": hours.quantize(PCT),
        "projected_spend_usd": spend,
        "projected_baseline_usd": baseline,
        "projected_savings_usd": baseline - spend,
        "estimate": True,
    }


def finance_report(
    store: Store, f: Filters, now: datetime | None = None, split: str = "app"
) -> dict[str, Any]:
    """Everything the finance page shows, as tables (lists of rows) and two summaries;
    `split` picks the dimension of the over-time breakdown."""
    from gateway.dashboard.quality import quality_by_candidate

    report: dict[str, Any] = {
        "filters": f.describe(),
        "currency": "USD",
        "bucket": bucket_of(f),
        "totals": totals(store, f),
        "projection": projection(store, f, now),
        "series": series(store, f),
        "split": split,
        "series_split": series_split(store, f, split),
    }
    for dim in DIMENSIONS:
        report[f"by_{dim}"] = breakdown(store, f, dim)
    report["quality"] = quality_by_candidate(store, f, report["by_route"])
    return report


TABLES = (
    "series",
    "series_split",
    "by_app",
    "by_team",
    "by_model",
    "by_route",
    "by_lever",
    "quality",
)
