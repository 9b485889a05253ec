"""The dashboard page in headless Chromium: signs in, draws its charts with no console errors,
every tab loads, and a reviewer labels an item with a click. Screenshots are test artifacts."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from tests.support.browser import Browser, artifacts_dir, chromium_path
from tests.support.dashboard_data import ask, queue_item
from tests.support.gateway import ADMIN_KEY, REVIEWER_KEY, RunningGateway

pytestmark = pytest.mark.slow  # trains, runs children or a browser: -m 'not slow' skips


@pytest.mark.skipif(
    chromium_path() is None and not os.environ.get("CI"),
    reason="chromium not installed (CI installs it)",
)
def test_dashboard_page_in_headless_chromium(
    gateway: RunningGateway, known: list[dict[str, Any]]
) -> None:
    for i in range(3):
        ask(gateway, "promoted", f"dashboard traffic {i}")
        ask(gateway, "gpt-4o", f"teacher traffic {i}")
    unsure = ask(gateway, "careful", "dashboard unsure [[conf:0.1]]")
    queue_item(gateway, unsure)
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
            drawn["guardrails_chart"] = await browser.evaluate(
                "!!Chart.getChart(document.getElementById('chart-guardrails'))"
            )
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
    assert drawn["tabs"] == [
        "Savings",
        "Routes",
        "Candidates",
        "History",
        "Lineage",
        "Guardrails",
        "Review",
    ]
    # The Savings view's charts (the Guardrails view's is drawn when its tab opens).
    charts = {k: v for k, v in drawn.items() if k.startswith("chart-") and k != "chart-guardrails"}
    assert len(charts) == 6 and drawn["guardrails_chart"]
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
