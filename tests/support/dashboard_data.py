"""Shared data and helpers for the dashboard tests (a pytest plugin, see conftest).

`known` holds 300 requests dated February 2021, a month no other test writes, inserted
through the log writer's insert path (and so through the rollups), twice for the first
batch: a replayed batch must count once.
"""

from __future__ import annotations

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

from tests.support.gateway import ADMIN_KEY, APP_KEY, REVIEWER_KEY, RunningGateway

APPS = {"shop": "retail", "intranet": "it"}
MODELS = ["teacher", "student-ok", "cheap"]


def known_rows(seed: int) -> list[dict[str, Any]]:
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


def insert_rows(gateway: RunningGateway, rows: list[dict[str, Any]], token: str) -> None:
    body = b"\n".join(
        orjson.dumps({k: v for k, v in r.items() if not k.startswith("_")}) for r in rows
    )
    gateway.state.store.insert_json_rows("requests", body, token)


def expected_sums(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
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


def api_get(
    gateway: RunningGateway, path: str, key: str = ADMIN_KEY, **params: Any
) -> httpx.Response:
    return httpx.get(
        gateway.base_url.removesuffix("/v1") + path,
        params=params,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


@pytest.fixture(scope="session")
def known(gateway: RunningGateway) -> list[dict[str, Any]]:
    rows = known_rows(7)
    insert_rows(gateway, rows[:150], "dash-batch-1")
    insert_rows(gateway, rows[150:], "dash-batch-2")
    # A replayed batch (journal replay after an outage) must not count twice in the rollups.
    insert_rows(gateway, rows[:150], "dash-batch-1")
    return rows


def ask(gateway: RunningGateway, model: str, text: str) -> str:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
    return resp.id


def queue_item(gateway: RunningGateway, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        gateway.state.writer.flush()
        queue = api_get(gateway, "/admin/api/review", key=REVIEWER_KEY).json()["queue"]
        found = [q for q in queue if q["request_id"] == request_id]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{request_id} never reached the review queue")
