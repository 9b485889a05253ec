"""How fast the finance figures are at scale: the dashboard's whole report (totals,
breakdowns, series, quality, projection) from the rollups, against the same totals and
breakdowns computed straight from `requests`.

Rows are generated inside ClickHouse (`INSERT ... SELECT FROM numbers()`) with the real
schema, so the materialized views fill the rollups exactly as the log writer's inserts do:
90 days, 20 apps in 5 teams, 10 routes, 8 models, a fifth served by students.

    python load_tests/bench_dashboard.py --rows 100000000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.dashboard.filters import Filters
from gateway.dashboard.finance import finance_report
from store import open_store

GENERATE = """
INSERT INTO requests (request_id, started_at, finished_at, app, team, route, served_model,
                      served_by, kind, status, input_tokens, output_tokens, cost_usd,
                      baseline_cost_usd)
SELECT generateUUIDv4(number),
       toDateTime64({start:DateTime}, 3)
           + toIntervalMillisecond((number * 7919) % {span_ms:UInt64}),
       toDateTime64({start:DateTime}, 3)
           + toIntervalMillisecond((number * 7919) % {span_ms:UInt64}),
       concat('app-', toString(number % 20)),
       concat('team-', toString(number % 5)),
       concat('route-', toString(number % 10)),
       if(number % 5 = 0, concat('student-', toString(number % 3)),
          concat('teacher-', toString(number % 5))),
       if(number % 5 = 0, 'student', 'teacher'),
       if(number % 50 = 0, 'audit', 'request'),
       'ok',
       100 + number % 400,
       20 + number % 200,
       toDecimal64((100 + number % 400) * 25 + (20 + number % 200) * 100, 9) / 10000000,
       if(number % 50 = 0, toDecimal64(0, 9),
          toDecimal64((100 + number % 400) * 25 + (20 + number % 200) * 100, 9) / 10000000)
FROM numbers({offset:UInt64}, {n:UInt64})
"""

RAW_TOTALS = """
SELECT app, sum(cost_usd) AS spend, sum(baseline_cost_usd) AS baseline, count() AS n
FROM requests WHERE started_at >= {start:DateTime} AND started_at < {end:DateTime}
GROUP BY app
"""


def timed(fn: Any, repeat: int = 5) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(samples), 1), "min_ms": round(min(samples), 1)}


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=10_000_000)
    parser.add_argument("--out", default="load_tests/results/dashboard.json")
    args = parser.parse_args()

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=90)
    store = open_store(f"chdb://{tempfile.mkdtemp(prefix='bench-dash-')}/db")
    t0 = time.perf_counter()
    for offset in range(0, args.rows, args.chunk):
        store.command(
            GENERATE,
            {
                "start": start.replace(tzinfo=None),
                "span_ms": int((end - start).total_seconds() * 1000),
                "offset": offset,
                "n": min(args.chunk, args.rows - offset),
            },
        )
    load_s = time.perf_counter() - t0
    rollup_rows = store.query_rows("SELECT count() FROM spend_hourly")[0][0]
    store.command("OPTIMIZE TABLE spend_hourly FINAL")
    merged_rows = store.query_rows("SELECT count() FROM spend_hourly")[0][0]
    f = Filters(start=start, end=end)
    params = f.params()

    report = finance_report(store, f)
    raw = store.query_rows(RAW_TOTALS, params)
    raw_spend = sum(r[1] for r in raw)
    assert report["totals"]["spend_usd"] == raw_spend, "rollup and raw sums must be equal"
    assert report["totals"]["requests"] == args.rows

    result = {
        "rows": args.rows,
        "load_seconds": round(load_s, 1),
        "rollup_rows_before_merge": rollup_rows,
        "rollup_rows": merged_rows,
        "finance_report_90d": timed(lambda: finance_report(store, f)),
        "finance_report_7d": timed(
            lambda: finance_report(store, Filters(start=end - timedelta(days=7), end=end))
        ),
        "raw_by_app_90d": timed(lambda: store.query_rows(RAW_TOTALS, params), repeat=3),
        "spend_usd": str(raw_spend),
        "exact": True,
    }
    store.close()
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
