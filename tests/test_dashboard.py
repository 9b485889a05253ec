"""The finance dashboard, its JSON and CSV, roles, the review queue and the page in Chromium.

Known rows are dated February 2021, a month no other test writes, so their sums are checked
against hand-computed ones exactly, through the same insert path (and rollups) the log
writer uses.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import random
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest

from distiller.curation import curate
from distiller.datasets import build_dataset
from tests.browser import Browser, artifacts_dir, chromium_path
from tests.conftest import (
    ADMIN_KEY,
    APP_KEY,
    FINANCE_KEY,
    OTHER_KEY,
    REVIEWER_KEY,
    RunningGateway,
)

APPS = {"shop": "retail", "intranet": "it"}
MODELS = ["teacher", "student-ok", "cheap"]


def _known_rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(300):
        app = rng.choice(list(APPS))
        kind = rng.choice(["request", "request", "request", "audit", "shadow"])
        model = rng.choice(MODELS)
        started = datetime(2021, 2, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(27 * 24 * 60))
        cost = Decimal(rng.randrange(0, 5_000_000)) / Decimal(10**9)
        baseline = Decimal(rng.randrange(0, 9_000_000)) / Decimal(10**9) if kind == "request" else 0
        rows.append(
            {
                "request_id": str(uuid.uuid4()),
                "started_at": started.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                "finished_at": started.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                "app": app,
                "team": APPS[app],
                "route": rng.choice(["support", "promoted"]),
                "kind": kind,
                "served_model": model,
                "served_by": "student" if model.startswith("student") else "teacher",
                "status": "ok" if i % 10 else "upstream_error",
                "input_tokens": rng.randrange(1000),
                "output_tokens": rng.randrange(1000),
                "cost_usd": str(cost),
                "baseline_cost_usd": str(baseline),
                "_started": started,
            }
        )
    return rows


def _insert(gateway: RunningGateway, rows: list[dict[str, Any]], token: str) -> None:
    body = b"\n".join(
        orjson.dumps({k: v for k, v in r.items() if not k.startswith("_")}) for r in rows
    )
    gateway.state.store.insert_json_rows("requests", body, token)


def _expected(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"requests": 0, "spend": Decimal(0), "baseline": Decimal(0), "students": 0}
    )
    for r in rows:
        group = out[r[key]]
        group["requests"] += 1
        group["spend"] += Decimal(r["cost_usd"])
        group["baseline"] += Decimal(r["baseline_cost_usd"])
        group["students"] += r["kind"] == "request" and r["served_by"] == "student"
    return out


def _get(gateway: RunningGateway, path: str, key: str = ADMIN_KEY, **params: Any) -> httpx.Response:
    return httpx.get(
        gateway.base_url.removesuffix("/v1") + path,
        params=params,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def known(gateway: RunningGateway) -> list[dict[str, Any]]:
    rows = _known_rows(7)
    _insert(gateway, rows[:150], "dash-batch-1")
    _insert(gateway, rows[150:], "dash-batch-2")
    # A replayed batch (spool replay after an outage) must not count twice in the rollups.
    _insert(gateway, rows[:150], "dash-batch-1")
    return rows


def test_finance_figures_are_exact_sums_of_known_rows(
    gateway: RunningGateway, known: list[dict[str, Any]]
) -> None:
    r = _get(gateway, "/admin/api/finance", **{"from": "2021-02-01", "to": "2021-02-28"})
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
    ]:
        expected = _expected(known, column)
        got = {row[dim]: row for row in report[f"by_{dim}"]}
        assert set(got) == set(expected), dim
        for name, exp in expected.items():
            assert got[name]["requests"] == exp["requests"]
            assert Decimal(got[name]["spend_usd"]) == exp["spend"], (dim, name)
            assert Decimal(got[name]["baseline_usd"]) == exp["baseline"], (dim, name)
            assert got[name]["student_requests"] == exp["students"]

    assert report["bucket"] == "day"
    by_day = _expected([{**x, "day": x["_started"].date().isoformat()} for x in known], "day")
    by_day_app = _expected(
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
    shop = _get(gateway, "/admin/api/finance", app="shop", **window).json()
    expected = sum(Decimal(x["cost_usd"]) for x in known if x["app"] == "shop")
    assert Decimal(shop["totals"]["spend_usd"]) == expected
    assert [row["app"] for row in shop["by_app"]] == ["shop"]
    team = _get(gateway, "/admin/api/finance", team="it", **window).json()
    assert Decimal(team["totals"]["spend_usd"]) == sum(
        Decimal(x["cost_usd"]) for x in known if x["team"] == "it"
    )
    # One day: hourly buckets, only that day's rows.
    day = [x for x in known if x["_started"].date().isoformat() == "2021-02-03"]
    one = _get(gateway, "/admin/api/finance", **{"from": "2021-02-03", "to": "2021-02-03"}).json()
    assert one["bucket"] == "hour" and len(one["series"]) == 24
    assert Decimal(one["totals"]["spend_usd"]) == sum(Decimal(x["cost_usd"]) for x in day)

    r = _get(gateway, "/admin/api/finance", format="csv", table="by_team", **window)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = {row["team"]: row for row in csv.DictReader(io.StringIO(r.text))}
    for team_name, exp in _expected(known, "team").items():
        assert Decimal(rows[team_name]["spend_usd"]) == exp["spend"]

    bad = _get(gateway, "/admin/api/finance", format="csv", table="nope", **window)
    assert bad.status_code == 400 and "by_app" in bad.json()["error"]["message"]
    routes = _get(gateway, "/admin/api/finance", split="route", **window).json()
    assert {s["route"] for s in routes["series_split"]} == {"support", "promoted"}
    bad = _get(gateway, "/admin/api/finance", split="colour", **window)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "split"
    bad = _get(gateway, "/admin/api/finance", **{"from": "last tuesday"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "from"


def test_roles_guard_the_dashboard_and_its_json(gateway: RunningGateway) -> None:
    for key in (APP_KEY, OTHER_KEY):
        for path in ("/admin/api/finance", "/admin/api/review", "/admin/api/candidates"):
            r = _get(gateway, path, key=key)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", path
        page = _get(gateway, "/dashboard", key=key)
        assert page.status_code == 403 and "app.js" not in page.text
    assert _get(gateway, "/admin/api/finance", key="sk-wrong").status_code == 401
    base = gateway.base_url.removesuffix("/v1")
    assert httpx.get(f"{base}/admin/api/finance").status_code == 401
    form = httpx.get(f"{base}/dashboard")
    assert form.status_code == 200 and 'name="key"' in form.text and "app.js" not in form.text

    assert _get(gateway, "/admin/api/finance", key=FINANCE_KEY).status_code == 200
    assert _get(gateway, "/admin/api/routes", key=FINANCE_KEY).status_code == 403
    assert _get(gateway, "/admin/api/review", key=FINANCE_KEY).status_code == 403
    assert _get(gateway, "/admin/api/review", key=REVIEWER_KEY).status_code == 200
    assert _get(gateway, "/admin/api/finance", key=REVIEWER_KEY).status_code == 403

    # The sign-in form: an app key is refused, a finance key gets a signed session cookie.
    with httpx.Client(base_url=base) as client:
        refused = client.post("/dashboard/login", data={"key": APP_KEY})
        assert refused.status_code == 403 and "flywheel_session" not in client.cookies
        ok = client.post("/dashboard/login", data={"key": FINANCE_KEY})
        assert ok.status_code == 303
        cookie = client.cookies["flywheel_session"]
        assert FINANCE_KEY not in cookie
        assert client.get("/admin/api/finance").status_code == 200
        assert client.get("/dashboard").status_code == 200
        _key_id, expiry, sig = cookie.rsplit(".", 2)
        client.cookies.set("flywheel_session", f"admin.{expiry}.{sig}")
        assert client.get("/admin/api/routes").status_code == 401, "a forged cookie"


def _ask(gateway: RunningGateway, model: str, text: str) -> str:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
    return resp.id


def _queue_item(gateway: RunningGateway, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        gateway.state.writer.flush()
        queue = _get(gateway, "/admin/api/review", key=REVIEWER_KEY).json()["queue"]
        found = [q for q in queue if q["request_id"] == request_id]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{request_id} never reached the review queue")


def _label(gateway: RunningGateway, **body: Any) -> httpx.Response:
    return httpx.post(
        gateway.base_url.removesuffix("/v1") + "/admin/api/review/labels",
        json=body,
        headers={"authorization": f"Bearer {REVIEWER_KEY}"},
    )


def _examples(gateway: RunningGateway, route: str) -> dict[str, Any]:
    return {e.request_id: e for e in curate(gateway.state.store, route).examples}


def test_review_label_wins_over_the_teacher_in_the_next_dataset(gateway: RunningGateway) -> None:
    # An unsure student: escalated to the teacher, the student's answer kept for review.
    unsure = _ask(gateway, "careful", "which card fee applies [[conf:0.2]]")
    # An audited student answer that the teacher disagrees with.
    disputed = _ask(gateway, "promoted", "refund for order 7 [[differ]]")
    item = _queue_item(gateway, unsure)
    other_app = _get(gateway, "/admin/api/review", key=REVIEWER_KEY, app="intranet").json()
    assert unsure not in {q["request_id"] for q in other_app["queue"]}, "the app filter"
    assert item["source"] == "low_confidence" and item["score"] == 0.2
    assert item["student_answer"] == "echo: which card fee applies"
    assert item["teacher_answer"] == "echo: which card fee applies"
    audit_item = _queue_item(gateway, disputed)
    assert audit_item["source"] == "audit" and audit_item["score"] < 0.5
    assert audit_item["student_answer"] == "student guess: refund for order 7"
    assert audit_item["messages"][0]["content"].startswith("refund for order 7")

    before = _examples(gateway, "careful")
    assert before[unsure].answer == "echo: which card fee applies"
    assert disputed not in _examples(gateway, "promoted"), "a student's answer never teaches"

    fixed = "The foreign card fee is 2.5%."
    assert _label(gateway, request_id=unsure, choice="correction", answer=fixed).status_code == 201
    assert _label(gateway, request_id=disputed, choice="student").status_code == 201

    after = _examples(gateway, "careful")
    assert after[unsure].answer == fixed and after[unsure].answer_source == "review"
    promoted = _examples(gateway, "promoted")
    assert promoted[disputed].answer == "student guess: refund for order 7"

    dataset = build_dataset(gateway.state.store, curate(gateway.state.store, "careful"))
    rows = gateway.rows(
        "SELECT answer_source, label_id FROM dataset_items"
        " WHERE dataset_id = {d:String} AND request_id = {r:UUID}",
        d=dataset.dataset_id,
        r=unsure,
    )
    assert rows and rows[0]["answer_source"] == "review" and rows[0]["label_id"]
    held = [e for e in dataset.train + dataset.eval if e.request_id == unsure]
    assert not held or held[0].answer == fixed

    queue = _get(gateway, "/admin/api/review", key=REVIEWER_KEY).json()
    assert unsure not in {q["request_id"] for q in queue["queue"]}, "labelled items leave"
    assert any(
        lb["request_id"] == unsure and lb["choice"] == "correction" for lb in queue["labels"]
    )

    # Lineage: a model trained on that dataset traces back to the request and its label.
    gateway.state.store.insert_rows(
        "training_runs",
        [["run-review-test", "careful", "ok", dataset.dataset_id, "local:tiny", datetime.now(UTC)]],
        ["run_id", "route", "candidate", "dataset_id", "base", "created_at"],
    )
    lineage = _get(gateway, "/admin/api/lineage", route="careful", candidate="ok").json()
    assert lineage["runs"][0]["dataset_id"] == dataset.dataset_id
    traced = [i for i in lineage["items"] if i["request_id"] == unsure]
    assert traced and traced[0]["answer_source"] == "review" and traced[0]["app"] == "shop"
    assert traced[0]["prompt"] == "which card fee applies [[conf:0.2]]"
    assert {"split": traced[0]["split"], "answer_source": "review"}.items() <= next(
        m for m in lineage["makeup"] if m["answer_source"] == "review"
    ).items()

    # Excluding takes the request out of training altogether.
    assert _label(gateway, request_id=unsure, choice="exclude").status_code == 201
    assert unsure not in _examples(gateway, "careful")


def test_label_errors(gateway: RunningGateway) -> None:
    r = _label(gateway, request_id=str(uuid.uuid4()), choice="teacher")
    assert r.status_code == 404 and r.json()["error"]["param"] == "request_id"
    r = _label(gateway, request_id=str(uuid.uuid4()), choice="correction")
    assert r.status_code == 422 and "correction" in r.json()["error"]["message"]
    r = _label(gateway, request_id="x", choice="maybe")
    assert r.status_code == 422
    r = httpx.post(
        gateway.base_url.removesuffix("/v1") + "/admin/api/review/labels",
        json={"request_id": str(uuid.uuid4()), "choice": "teacher"},
        headers={"authorization": f"Bearer {FINANCE_KEY}"},
    )
    assert r.status_code == 403


def test_admin_views(gateway: RunningGateway) -> None:
    routes = _get(gateway, "/admin/api/routes").json()
    assert "promoted" in {r["route"] for r in routes["routes"]}
    cands = _get(gateway, "/admin/api/candidates").json()["candidates"]
    assert {"route": "promoted", "candidate": "ok", "state": "promoted"}.items() <= {
        k: v
        for c in cands
        if (c["route"], c["candidate"]) == ("promoted", "ok")
        for k, v in c.items()
    }.items()
    r = _get(gateway, "/admin/api/lineage", route="promoted")
    assert r.status_code == 400
    lineage = _get(gateway, "/admin/api/lineage", route="promoted", candidate="ok").json()
    assert set(lineage) >= {"runs", "datasets", "makeup", "items"}
    from distiller.events import record_event

    record_event(
        gateway.state.store,
        "promoted",
        "ok",
        "rollback",
        "audit agreement 0.71 < 0.90 over the last 200 audits",
        {"agreement": 0.71},
        from_state="promoted",
        to_state="rolled_back",
    )
    history = _get(gateway, "/admin/api/history", route="promoted").json()["events"]
    assert history[0]["to_state"] == "rolled_back" and "0.71" in history[0]["reason"]
    as_csv = _get(gateway, "/admin/api/history", route="promoted", format="csv", table="events")
    assert as_csv.status_code == 200 and "rolled_back" in as_csv.text


@pytest.mark.skipif(
    chromium_path() is None and not os.environ.get("CI"),
    reason="chromium not installed (CI installs it)",
)
def test_dashboard_page_in_headless_chromium(
    gateway: RunningGateway, known: list[dict[str, Any]]
) -> None:
    for i in range(3):
        _ask(gateway, "promoted", f"dashboard traffic {i}")
        _ask(gateway, "gpt-4o", f"teacher traffic {i}")
    unsure = _ask(gateway, "careful", "dashboard unsure [[conf:0.1]]")
    _queue_item(gateway, unsure)
    base = gateway.base_url.removesuffix("/v1")
    shot = artifacts_dir() / "dashboard.png"

    async def visit() -> tuple[list[str], dict[str, Any]]:
        async with Browser() as browser:
            await browser.goto(f"{base}/dashboard")
            assert await browser.evaluate("!!document.querySelector('form input[name=key]')")
            await browser.submit_form("form", {"key": ADMIN_KEY})
            await browser.wait_for("document.body.dataset.ready === '1'")
            drawn = await browser.evaluate(
                """(() => {
                  const out = {};
                  for (const c of document.querySelectorAll('canvas')) {
                    const chart = Chart.getChart(c);
                    const ctx = c.getContext('2d');
                    const px = ctx.getImageData(0, 0, c.width, c.height).data;
                    let painted = 0;
                    for (let i = 3; i < px.length; i += 4) if (px[i]) painted++;
                    out[c.id] = {chart: !!chart, points: chart ? chart.data.datasets
                      .reduce((n, d) => n + d.data.length, 0) : 0, painted};
                  }
                  out.kpis = document.querySelectorAll('.kpi').length;
                  out.tables = document.querySelectorAll('#finance-tables table').length;
                  out.tabs = [...document.querySelectorAll('nav a')].map(a => a.textContent);
                  return out;
                })()"""
            )
            await browser.screenshot(shot)
            for tab in drawn["tabs"][1:]:
                await browser.evaluate(
                    f"[...document.querySelectorAll('nav a')].find(a => a.textContent === "
                    f"{tab!r}).click()"
                )
                await browser.wait_for(
                    "document.querySelector('.view.active') &&"
                    " document.querySelector('.view.active').children.length > 0"
                )
                await asyncio.sleep(0.3)
            await browser.screenshot(artifacts_dir() / "dashboard-last-tab.png")
            page_errors = await browser.evaluate("window.__flywheelErrors")

            # A reviewer sees only the queue, and labels an item with a click.
            await browser.goto(f"{base}/dashboard/logout")
            await browser.submit_form("form", {"key": REVIEWER_KEY})
            await browser.wait_for("document.body.dataset.ready === '1'")
            drawn["reviewer_tabs"] = await browser.evaluate(
                "[...document.querySelectorAll('nav a')].map(a => a.textContent)"
            )
            card = f".review-item[data-request-id={unsure!r}]"
            await browser.wait_for(f"!!document.querySelector({card!r})")
            await browser.screenshot(artifacts_dir() / "dashboard-review.png")
            await browser.evaluate(
                f"[...document.querySelector({card!r}).querySelectorAll('button')]"
                ".find(b => b.textContent === 'Teacher is right').click()"
            )
            await browser.wait_for(f"!document.querySelector({card!r})")
            page_errors += await browser.evaluate("window.__flywheelErrors")
            return browser.console_errors + page_errors, drawn

    errors, drawn = asyncio.run(visit())
    assert errors == []
    assert drawn["tabs"] == ["Savings", "Routes", "Candidates", "History", "Lineage", "Review"]
    charts = {k: v for k, v in drawn.items() if k.startswith("chart-")}
    assert len(charts) == 6
    for name, chart in charts.items():
        assert chart["chart"] and chart["points"] > 0 and chart["painted"] > 1000, (name, chart)
    assert drawn["kpis"] == 7 and drawn["tables"] >= 5
    assert shot.stat().st_size > 20_000
    assert drawn["reviewer_tabs"] == ["Review"]
    labels = gateway.rows(
        "SELECT reviewer, choice, answer FROM review_labels WHERE request_id = {r:UUID}", r=unsure
    )
    assert labels == [
        {"reviewer": "reviewer", "choice": "teacher", "answer": "echo: dashboard unsure"}
    ]


def test_flywheel_report_prints_the_same_figures(
    gateway: RunningGateway, known: list[dict[str, Any]], tmp_path: Any
) -> None:
    import subprocess
    import sys

    window = ["--from", "2021-02-01", "--to", "2021-02-28"]
    base = gateway.base_url.removesuffix("/v1")
    cmd = [sys.executable, "-m", "flywheel.cli", "report", "--url", base, *window]
    out = subprocess.run([*cmd, "--key", FINANCE_KEY, "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    api = _get(gateway, "/admin/api/finance", **{"from": "2021-02-01", "to": "2021-02-28"}).json()
    printed = orjson.loads(out.stdout)
    assert printed["totals"] == api["totals"] and printed["by_app"] == api["by_app"]
    text = subprocess.run(
        [*cmd, "--key", FINANCE_KEY, "--width", "140"], capture_output=True, text=True
    )
    spend = sum(Decimal(x["cost_usd"]) for x in known)
    from flywheel.report_cli import usd

    assert usd(spend) in text.stdout
    assert "By team" in text.stdout
    denied = subprocess.run([*cmd, "--key", APP_KEY], capture_output=True, text=True)
    assert denied.returncode != 0 and "403" in denied.stderr

    # Straight from a store no gateway holds: the same code, the same exact sums.
    from flywheel.store import open_store

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
    from pathlib import Path

    path = Path(__file__).parent.parent / "deploy/grafana/dashboards/flywheel-finance.json"
    dashboard = orjson.loads(path.read_bytes())
    api = _get(gateway, "/admin/api/finance", **{"from": "2021-02-01", "to": "2021-02-28"}).json()
    shop = _get(
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
    from gateway.dashboard.filters import Filters
    from gateway.dashboard.finance import projection

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
    _insert(gateway, rows, "projection-rows")
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
