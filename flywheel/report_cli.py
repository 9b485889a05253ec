"""`flywheel report`: the dashboard's finance figures in the terminal.

The figures are the ones `/admin/api/finance` serves, computed by the same code: read from
ClickHouse directly (`--config` or `--dsn`; the embedded store only while no gateway holds
it), or fetched from a running gateway (`--url` with a finance or admin key).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from flywheel.config_file import load_or_exit


def _params(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.start:
        out["from"] = args.start
    if args.end:
        out["to"] = args.end
    if args.app:
        out["app"] = args.app
    if args.team:
        out["team"] = args.team
    return out


def fetch(url: str, key: str, params: dict[str, Any]) -> dict[str, Any]:
    from flywheel.cli_errors import gateway_call

    query = urllib.parse.urlencode(params, doseq=True)
    body: dict[str, Any] = gateway_call(
        "GET", f"{url.rstrip('/')}/admin/api/finance?{query}", key, timeout=60
    )
    return body


def compute(dsn: str, params: dict[str, Any], few_shot: tuple[str, ...] = ()) -> dict[str, Any]:
    from starlette.datastructures import QueryParams

    from flywheel.cli_errors import existing_store
    from gateway.dashboard.api import json_response
    from gateway.dashboard.filters import Filters
    from gateway.dashboard.finance import finance_report
    from store import open_store

    store = open_store(existing_store(dsn))  # held by a gateway: one line with the fix
    try:
        f = Filters.from_query(QueryParams(params)).model_copy(update={"few_shot_models": few_shot})
        report = finance_report(store, f)
    finally:
        store.close()
    # Through the API's own encoder: the terminal and the JSON show the same strings.
    parsed: dict[str, Any] = json.loads(bytes(json_response(report).body))
    return parsed


def _few_shot_models(config: str | None) -> tuple[str, ...]:
    """The models few-shot candidates serve, when the config (and its policies) say: savings
    by lever then tell their answers from fine-tuned students'."""
    if not config:
        return ()
    from gateway.config import load_policy_set
    from gateway.dashboard.finance import few_shot_models

    try:
        return few_shot_models(load_policy_set(load_or_exit(config)))
    except Exception:  # a policy that does not load: the report still runs, few-shot as student
        return ()


def usd(v: Any) -> str:
    d = Decimal(str(v))
    return f"${d:,.2f}" if abs(d) >= 1 or d == 0 else f"${d:.6f}"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{Decimal(str(v)):.1f}%"


def render(report: dict[str, Any], console: Console) -> None:
    t, p, f = report["totals"], report["projection"], report["filters"]
    scope = ", ".join(f"{k}: {', '.join(v)}" for k, v in f.items() if isinstance(v, list) and v)
    console.print(f"[bold]Flywheel spend[/bold] {f['from']} → {f['to']} {scope}")
    summary = Table(show_header=False, box=None)
    summary.add_row("Spend", usd(t["spend_usd"]), f"{t['requests']} calls")
    summary.add_row("Teacher baseline", usd(t["baseline_usd"]), f"{t['user_requests']} requests")
    summary.add_row("Savings", usd(t["savings_usd"]), _pct(t["savings_pct"]))
    summary.add_row("Flywheel overhead", usd(t["overhead_usd"]), "shadows, audits, escalations")
    summary.add_row("Served by students", _pct(t["student_share_pct"]), f"{t['student_requests']}")
    summary.add_row(
        f"Projected {p['month']} spend",
        usd(p["projected_spend_usd"]),
        f"month to date {usd(p['month_to_date_spend_usd'])}",
    )
    summary.add_row(f"Projected {p['month']} savings", usd(p["projected_savings_usd"]), "")
    console.print(summary)
    for dim in ("app", "team", "model", "route"):
        table = Table(
            dim,
            "requests",
            "calls",
            "student %",
            "spend",
            "baseline",
            "savings",
            "savings %",
            title=f"By {dim}",
        )
        for row in report[f"by_{dim}"]:
            table.add_row(
                row[dim] or "(none)",
                # Users' requests, as the header counts them; calls add the flywheel's own
                # (shadows, audits, escalated student answers), which spend includes.
                str(row["user_requests"]),
                str(row["requests"]),
                _pct(row["student_share_pct"]),
                *(usd(row[m]) for m in ("spend_usd", "baseline_usd", "savings_usd")),
                _pct(row["savings_pct"]),
            )
        console.print(table)
    quality = Table(
        "route",
        "candidate",
        "state",
        "audits",
        "audit agreement",
        "certified",
        "eval agreement",
        "eval coverage",
        "escalates below",
        "route savings",
        title="Quality next to savings",
    )
    for q in report["quality"]:
        quality.add_row(
            q["route"],
            q["candidate"],
            q["state"],
            str(q["audits"]),
            _pct(q["audit_agreement_pct"]),
            _pct(q.get("certified_pct")),
            _pct(q["eval_agreement_pct"]),
            _pct(q.get("eval_coverage_pct")),
            "–" if q.get("escalate_below") is None else f"{q['escalate_below']:.3f}",
            usd(q["route_savings_usd"]),
        )
    console.print(quality)
    for q in report["quality"]:
        if q.get("below_certified"):
            console.print(
                f"[bold red]below its certified figure[/]: {q['route']}/{q['candidate']}: "
                f"{q['below_certified']}"
            )


def cmd_report(args: argparse.Namespace) -> int:
    params = _params(args)
    if args.url:
        key = args.key or os.environ.get("FLYWHEEL_KEY", "")
        if not key:
            print("--url needs --key (or FLYWHEEL_KEY): a finance or admin key", file=sys.stderr)
            return 2
        report = fetch(args.url, key, params)
    else:
        dsn = args.dsn
        if not dsn:
            if not args.config:
                print("give --config, --dsn or --url", file=sys.stderr)
                return 2
            dsn = load_or_exit(args.config).clickhouse_dsn
        report = compute(dsn, params, _few_shot_models(args.config))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render(report, Console(width=args.width))
    return 0


def add_command(sub: Any) -> None:
    report = sub.add_parser("report", help="spend, baseline and savings in the terminal")
    report.add_argument("--config", help="gateway YAML: read its ClickHouse directly")
    report.add_argument("--dsn", help="ClickHouse DSN (chdb:///path or http://host:8123)")
    report.add_argument("--url", help="a running gateway, e.g. http://127.0.0.1:8080")
    report.add_argument("--key", help="finance or admin key for --url (or FLYWHEEL_KEY)")
    report.add_argument("--from", dest="start", help="first day (UTC), default 30 days ago")
    report.add_argument("--to", dest="end", help="last day (UTC, inclusive), default today")
    report.add_argument("--app", action="append", default=[])
    report.add_argument("--team", action="append", default=[])
    report.add_argument("--json", action="store_true", help="the /admin/api/finance JSON")
    report.add_argument("--width", type=int, default=None)
    report.set_defaults(fn=cmd_report)
