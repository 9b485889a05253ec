"""Finance figures: exact sums of known rows through the API, its filters and CSV, `flywheel
report`, the Grafana panels and the month projection."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from flywheel.report_cli import usd
from gateway.dashboard.filters import Filters
from gateway.dashboard.finance import projection
from store import open_store
from tests.support.dashboard_data import api_get, expected_sums, insert_rows
from tests.support.gateway import APP_KEY, FINANCE_KEY, RunningGateway


def test_finance_figures_are_exact_sums_ofknown_rows(
    gateway: RunningGateway, known: list[dict[str, Any]]
) -> None:
    r = api_get(gateway, "/admin/api/finance", **{"from": "2021-02-01", "to": "2021-02-28"})
    assert r.status_code == 200, r.text
    report = r.json()
    spend = sum(Decimal(x["cost_usd"]) for x in known)
    baseline = sum(Decimal(x["baseline_cost_usd"]) for x in known)
    totals = report["totals"]
    assert totals["requests"] == len(known)
    assert Decimal(totals["spend_usd"]) == spend
    assert Decimal(totals["baseline_usd"]) == baseline
    assert Decimal(totals["savings_usd"]) == baseline - spend
    assert Decimal(totals["overhead_usd"]) == sum(
        Decimal(x["cost_usd"]) for x in known if x["kind"] != "request"
    )
    users = [x for x in known if x["kind"] == "request"]
    students = sum(x["served_by"] == "student" for x in users)
    assert totals["user_requests"] == len(users) and totals["student_requests"] == students
    assert Decimal(totals["student_share_pct"]) == (Decimal(students) * 100 / len(users)).quantize(
        Decimal("0.01")
    )
    assert totals["input_tokens"] == sum(x["input_tokens"] for x in known)

    for dim, column in [
        ("app", "app"),
        ("team", "team"),
        ("model", "served_model"),
        ("route", "route"),
        ("lever", "served_by"),
    ]:
        expected = expected_sums(known, column)
        got = {row[dim]: row for row in report[f"by_{dim}"]}
        assert set(got) == set(expected), dim
        for name, exp in expected.items():
            assert got[name]["requests"] == exp["requests"]
            assert Decimal(got[name]["spend_usd"]) == exp["spend"], (dim, name)
            assert Decimal(got[name]["baseline_usd"]) == exp["baseline"], (dim, name)
            assert got[name]["student_requests"] == exp["students"]

    assert report["bucket"] == "day"
    by_day = expected_sums([{**x, "day": x["_started"].date().isoformat()} for x in known], "day")
    by_day_app = expected_sums(
        [{**x, "key": (x["_started"].date().isoformat(), x["app"])} for x in known], "key"
    )
    assert report["split"] == "app"
    assert {
        (s["bucket"][:10], s["app"]): Decimal(s["spend_usd"]) for s in report["series_split"]
    } == {k: v["spend"] for k, v in by_day_app.items()}
    series = {s["bucket"][:10]: Decimal(s["spend_usd"]) for s in report["series"]}
    assert len(series) == 28, "every day of the range, empty days as zero"
    assert {d: v for d, v in series.items() if v} == {
        d: v["spend"] for d, v in by_day.items() if v["spend"]
    }


def test_filters_and_csv_export(gateway: RunningGateway, known: list[dict[str, Any]]) -> None:
    window = {"from": "2021-02-01", "to": "2021-02-28"}
    shop = api_get(gateway, "/admin/api/finance", app="shop", **window).json()
    expected = sum(Decimal(x["cost_usd"]) for x in known if x["app"] == "shop")
    assert Decimal(shop["totals"]["spend_usd"]) == expected
    assert [row["app"] for row in shop["by_app"]] == ["shop"]
    team = api_get(gateway, "/admin/api/finance", team="it", **window).json()
    assert Decimal(team["totals"]["spend_usd"]) == sum(
        Decimal(x["cost_usd"]) for x in known if x["team"] == "it"
    )
    # One day: hourly buckets, only that day's rows.
    day = [x for x in known if x["_started"].date().isoformat() == "2021-02-03"]
    one = api_get(
        gateway, "/admin/api/finance", **{"from": "2021-02-03", "to": "2021-02-03"}
    ).json()
    assert one["bucket"] == "hour" and len(one["series"]) == 24
    assert Decimal(one["totals"]["spend_usd"]) == sum(Decimal(x["cost_usd"]) for x in day)

    r = api_get(gateway, "/admin/api/finance", format="csv", table="by_team", **window)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = {row["team"]: row for row in csv.DictReader(io.StringIO(r.text))}
    for team_name, exp in expected_sums(known, "team").items():
        assert Decimal(rows[team_name]["spend_usd"]) == exp["spend"]

    bad = api_get(gateway, "/admin/api/finance", format="csv", table="nope", **window)
    assert bad.status_code == 400 and "by_app" in bad.json()["error"]["message"]
    routes = api_get(gateway, "/admin/api/finance", split="route", **window).json()
    assert {s["route"] for s in routes["series_split"]} == {"support", "promoted"}
    bad = api_get(gateway, "/admin/api/finance", split="colour", **window)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "split"
    bad = api_get(gateway, "/admin/api/finance", **{"from": "last tuesday"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "from"
    # Seen: `to=9999-12-31` was a 500 and `from=0001-01-01` a 503 with the database's text.
    for name, value in (("to", "9999-12-31"), ("from", "0001-01-01")):
        bad = api_get(gateway, "/admin/api/finance", **{name: value})
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["param"] == name and "between 1970" in bad.text


def test_flywheel_report_prints_the_same_figures(
    gateway: RunningGateway, known: list[dict[str, Any]], tmp_path: Any
) -> None:

    window = ["--from", "2021-02-01", "--to", "2021-02-28"]
    base = gateway.base_url.removesuffix("/v1")
    cmd = [sys.executable, "-m", "flywheel.cli", "report", "--url", base, *window]
    out = subprocess.run([*cmd, "--key", FINANCE_KEY, "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    api = api_get(
        gateway, "/admin/api/finance", **{"from": "2021-02-01", "to": "2021-02-28"}
    ).json()
    printed = orjson.loads(out.stdout)
    assert printed["totals"] == api["totals"] and printed["by_app"] == api["by_app"]
    text = subprocess.run(
        [*cmd, "--key", FINANCE_KEY, "--width", "140"], capture_output=True, text=True
    )
    spend = sum(Decimal(x["cost_usd"]) for x in known)
    assert usd(spend) in text.stdout
    assert "By team" in text.stdout
    # The tables count requests as the header does (calls: the flywheel's own too).
    header = next(x for x in text.stdout.splitlines() if "Teacher baseline" in x)
    users = api["totals"]["user_requests"]
    assert f"{users} requests" in header
    assert sum(r["user_requests"] for r in api["by_app"]) == users
    denied = subprocess.run([*cmd, "--key", APP_KEY], capture_output=True, text=True)
    assert denied.returncode != 0 and "403" in denied.stderr

    # Straight from a store no gateway holds: the same code, the same exact sums.
    dsn = f"chdb://{tmp_path}/report-db"
    store = open_store(dsn)
    store.insert_json_rows(
        "requests",
        b"\n".join(
            orjson.dumps({k: v for k, v in r.items() if not k.startswith("_")}) for r in known
        ),
        "report-test",
    )
    store.close()
    direct = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "report", "--dsn", dsn, *window, "--json"],
        capture_output=True,
        text=True,
    )
    assert direct.returncode == 0, direct.stderr
    assert orjson.loads(direct.stdout)["totals"] == api["totals"]


def _grafana_sql(sql: str, start: str, end: str, app: str = "__all") -> str:
    """The ClickHouse plugin's macros and variables as Grafana would expand them."""
    return (
        sql.replace(
            "$__timeFilter(hour)", f"hour >= toDateTime('{start}') AND hour < toDateTime('{end}')"
        )
        .replace("$__timeInterval(hour)", "toStartOfDay(hour)")
        .replace("${app:singlequote}", f"'{app}'")
        .replace("${team:singlequote}", "'__all'")
    )


def test_grafana_panels_show_the_dashboard_figures(
    gateway: RunningGateway, known: list[dict[str, Any]]
) -> None:

    path = Path(__file__).parent.parent / "deploy/grafana/dashboards/flywheel-finance.json"
    dashboard = orjson.loads(path.read_bytes())
    api = api_get(
        gateway, "/admin/api/finance", **{"from": "2021-02-01", "to": "2021-02-28"}
    ).json()
    shop = api_get(
        gateway, "/admin/api/finance", app="shop", **{"from": "2021-02-01", "to": "2021-02-28"}
    ).json()
    results = {}
    for panel in dashboard["panels"]:
        sql = panel["targets"][0]["rawSql"]
        assert panel["datasource"]["uid"] == "flywheel-clickhouse"
        results[panel["title"]] = gateway.rows(
            _grafana_sql(sql, "2021-02-01 00:00:00", "2021-03-01 00:00:00")
        )
        if "${app:singlequote}" in sql and panel["title"] == "Spend":
            only_shop = gateway.rows(
                _grafana_sql(sql, "2021-02-01 00:00:00", "2021-03-01 00:00:00", app="shop")
            )
            assert Decimal(only_shop[0]["spend_usd"]) == Decimal(shop["totals"]["spend_usd"])
    totals = api["totals"]
    assert Decimal(results["Spend"][0]["spend_usd"]) == Decimal(totals["spend_usd"])
    assert Decimal(results["Teacher baseline"][0]["baseline_usd"]) == Decimal(
        totals["baseline_usd"]
    )
    assert Decimal(results["Savings"][0]["savings_usd"]) == Decimal(totals["savings_usd"])
    assert round(results["Served by students"][0]["student_share_pct"], 2) == float(
        totals["student_share_pct"]
    )
    by_app = {r["app"]: Decimal(r["spend_usd"]) for r in results["By app"]}
    assert by_app == {r["app"]: Decimal(r["spend_usd"]) for r in api["by_app"]}
    by_model = {r["model"]: Decimal(r["savings_usd"]) for r in results["By served model"]}
    assert by_model == {r["model"]: Decimal(r["savings_usd"]) for r in api["by_model"]}
    series = {
        r["time"].date().isoformat(): Decimal(r["spend_usd"])
        for r in results["Spend vs teacher baseline"]
    }
    assert series == {
        s["bucket"][:10]: Decimal(s["spend_usd"]) for s in api["series"] if Decimal(s["spend_usd"])
    }


def test_month_projection_at_the_current_rate(gateway: RunningGateway) -> None:
    rows = []
    for day in range(1, 15):  # March 1st to 14th 2021, one request a day at noon
        at = datetime(2021, 3, day, 12, tzinfo=UTC)
        rows.append(
            {
                "request_id": str(uuid.uuid4()),
                "started_at": at.strftime("%Y-%m-%d %H:%M:%S.000"),
                "app": "proj-app",
                "team": "proj",
                "kind": "request",
                "cost_usd": f"0.00{day:02d}",
                "baseline_cost_usd": "0.01",
                "_started": at,
            }
        )
    insert_rows(gateway, rows, "projection-rows")
    now = datetime(2021, 3, 15, tzinfo=UTC)
    p = projection(
        gateway.state.store,
        Filters.last_days(now=now).model_copy(update={"apps": ("proj-app",)}),
        now=now,
    )
    mtd = sum(Decimal(r["cost_usd"]) for r in rows)
    window = sum(Decimal(r["cost_usd"]) for r in rows if r["_started"] >= now - timedelta(days=7))
    hours_left = Decimal(17 * 24)  # March 15th 00:00 to April 1st
    expected = (mtd + window / 168 * hours_left).quantize(Decimal("0.000001"))
    assert p["month"] == "2021-03" and p["month_to_date_spend_usd"] == mtd
    assert p["projected_spend_usd"] == expected
    assert p["projected_baseline_usd"] == (
        Decimal("0.14") + Decimal("0.07") / 168 * hours_left
    ).quantize(Decimal("0.000001"))


def test_a_candidate_audited_below_its_certified_figure_is_flagged(
    gateway: RunningGateway,
) -> None:
    """Evaluated: 97 of 100 kept answers agree at its threshold 0.6 (the 40 below it do
    not count); audited: 140 of 160 served answers (87.5%): flagged, with the figures."""
    from gateway.dashboard.quality import quality_by_candidate

    store = gateway.state.store
    now = datetime.now(UTC)
    store.insert_rows(
        "eval_reports",
        [
            [
                "run-q",
                "quality-route",
                "q",
                "eval-q",
                "exact_match",
                140,
                0.7,
                0.6,
                0.9,
                True,
                "[]",
                now,
                0.6,
                0.71,
                0.5,
            ]
        ],
        [
            "run_id",
            "route",
            "candidate",
            "eval_set_id",
            "metric",
            "examples",
            "agreement",
            "wilson_lower",
            "threshold",
            "passed",
            "coverage_curve",
            "created_at",
            "min_confidence",
            "coverage",
            "min_coverage",
        ],
    )
    results = [(i < 97, 0.9) for i in range(100)] + [(False, 0.3)] * 40
    store.insert_rows(
        "eval_results",
        [
            ["run-q", "eval-q", uuid.uuid4(), "exact_match", float(ok), ok, conf, "s", "t"]
            for ok, conf in results
        ],
        [
            "run_id",
            "eval_set_id",
            "request_id",
            "metric",
            "score",
            "agree",
            "confidence",
            "student_answer",
            "teacher_answer",
        ],
    )
    store.insert_rows(
        "audits",
        [
            [
                uuid.uuid4(),
                uuid.uuid4(),
                now,
                "quality-route",
                "q",
                "exact_match",
                1.0 if i < 140 else 0.0,
                "a",
                "b",
            ]
            for i in range(160)
        ],
        [
            "request_id",
            "audit_request_id",
            "at",
            "route",
            "candidate",
            "metric",
            "agreement",
            "student_answer",
            "teacher_answer",
        ],
    )
    window = Filters(start=now - timedelta(days=1), end=now + timedelta(days=1))
    rows = quality_by_candidate(store, window, [])
    found = next(r for r in rows if (r["route"], r["candidate"]) == ("quality-route", "q"))
    assert found["certified_pct"] == Decimal("97.0")
    assert found["audit_agreement_pct"] == Decimal("87.5")
    assert found["below_certified"].startswith("audited 87.5% over 160 audits (upper bound")
    assert found["below_certified"].endswith("< certified 97.0%")
