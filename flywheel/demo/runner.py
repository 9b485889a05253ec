"""`flywheel demo`: the gateway, the student server, the distiller and a local teacher, with
seeded traffic from two apps, until a routine workload is served by a promoted student.

The demo drives the same parts a production user runs: `flywheel serve`'s app (embedded
ClickHouse, the student server as its child, the distiller in its thread with training in a
subprocess). Only the teacher is a stand-in (`teacher.py`), and the traffic generator.
The summary is read back from ClickHouse, not from the demo's own counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
from rich.console import Console
from rich.live import Live
from rich.table import Table

from flywheel.demo.teacher import LocalTeacher
from flywheel.demo.workloads import Traffic
from flywheel.serve import GatewayThread
from gateway.config import GatewayConfig
from gateway.state import GatewayState

KEYS = {"sk-demo-shop": "shop", "sk-demo-bank": "bank"}
ADMIN_KEY = "sk-demo-admin"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(data_dir: Path, teacher_url: str, quick: bool, port: int) -> GatewayConfig:
    student_port = _port()
    return GatewayConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "server": {"port": port},
            "log": {"flush_interval_s": 0.2},
            "router": {"policy_reload_s": 1.0, "state_refresh_s": 1.0},
            "distiller": {"enabled": True, "interval_s": 3.0 if quick else 10.0},
            "students": {"enabled": True, "port": student_port},
            "models": {
                # Priced like gpt-4o (USD per million tokens).
                "teacher": {
                    "model": "openai/frontier-teacher",
                    "api_base": teacher_url,
                    "price": {"input_per_million": "2.50", "output_per_million": "10.00"},
                },
                "intents-student": {
                    "model": "flywheel/intents-student",
                    "api_base": f"http://127.0.0.1:{student_port}/v1",
                    "price": {"input_per_million": "0.02", "output_per_million": "0.04"},
                },
            },
            "apps": {
                "shop": {"team": "retail", "train_on_traffic": True},
                "bank": {"team": "finance", "train_on_traffic": True},
            },
            "keys": [{"id": f"{app}-key", "key": key, "app": app} for key, app in KEYS.items()]
            + [{"id": "demo-admin", "key": ADMIN_KEY, "role": "admin"}],
            "routes": [
                {
                    "name": "intents",
                    "match": {"models": ["intents"]},
                    "teacher": "teacher",
                    "candidates": [
                        {"name": "small", "model": "intents-student", "base": "local:tiny"}
                    ],
                    "gate": {
                        "metric": "json_field_match",
                        "fields": ["intent"],
                        "threshold": 0.75 if quick else 0.85,
                        "min_examples": 20,
                    },
                    "rollout": {
                        "shadow_share": 0.0,
                        "canary_share": 0.5,
                        "canary_min_examples": 10,
                    },
                    "audit": {"share": 0.3, "min_agreement": 0.75, "window": 40},
                    "escalation": {"min_confidence": 0.3},
                    "training": {
                        "min_new_examples": 150 if quick else 250,
                        "epochs": 12,
                        "pretrain_steps": 100 if quick else 300,
                        "batch_size": 16,
                    },
                },
                {"name": "assistant", "match": {"models": ["assistant"]}, "teacher": "teacher"},
            ],
        }
    )


SUMMARY_SQL = """
SELECT route,
       count() AS requests,
       countIf(served_by = 'student') AS by_student,
       sum(cost_usd) AS spend,
       sum(baseline_cost_usd) AS baseline
FROM requests WHERE kind = 'request' GROUP BY route ORDER BY route
"""


def summary(state: GatewayState) -> dict[str, Any]:
    state.writer.flush(30)
    store = state.store
    routes = {}
    for r in store.query_dicts(SUMMARY_SQL):
        routes[r["route"]] = {
            "requests": int(r["requests"]),
            "student_share": int(r["by_student"]) / int(r["requests"]) if r["requests"] else 0,
            "spend_usd": str(r["spend"]),
            "baseline_usd": str(r["baseline"]),
        }
    extra = store.query_rows("SELECT sum(cost_usd) FROM requests WHERE kind != 'request'")
    spend = sum((Decimal(v["spend_usd"]) for v in routes.values()), Decimal(0))
    spend += Decimal(extra[0][0] or 0)
    baseline = sum((Decimal(v["baseline_usd"]) for v in routes.values()), Decimal(0))
    evals = store.query_dicts(
        "SELECT route, candidate, argMax(agreement, created_at) AS agreement, "
        "argMax(passed, created_at) AS passed, argMax(eval_set_id, created_at) AS eval_set "
        "FROM eval_reports GROUP BY route, candidate"
    )
    audits = store.query_dicts(
        "SELECT route, candidate, avg(agreement) AS agreement, count() AS n FROM audits "
        "GROUP BY route, candidate"
    )
    states = store.query_dicts(
        "SELECT route, candidate, argMax(state, updated_at) AS state FROM candidate_states "
        "GROUP BY route, candidate"
    )
    return {
        "routes": routes,
        "spend_usd": str(spend),
        "baseline_usd": str(baseline),
        "savings_pct": float((baseline - spend) / baseline * 100) if baseline else 0.0,
        "eval": evals,
        "audits": audits,
        "candidates": states,
    }


def _table(sent: int, s: dict[str, Any], elapsed: float) -> Table:
    t = Table(title=f"flywheel demo: {sent} requests sent, {elapsed:.0f}s")
    for col in ("workload", "requests", "served by student", "spend $", "teacher baseline $"):
        t.add_column(col)
    for name, r in s["routes"].items():
        t.add_row(
            name,
            str(r["requests"]),
            f"{r['student_share']:.0%}",
            f"{Decimal(r['spend_usd']):.4f}",
            f"{Decimal(r['baseline_usd']):.4f}",
        )
    states = ", ".join(f"{c['route']}/{c['candidate']}: {c['state']}" for c in s["candidates"])
    t.caption = f"candidates: {states or 'none yet (collecting traffic)'}"
    return t


async def _drive(base_url: str, traffic: Traffic, rate: float, until: Any) -> int:
    clients = [openai.AsyncOpenAI(base_url=base_url, api_key=k, max_retries=3) for k in KEYS]
    sent = 0
    pending: set[asyncio.Task[Any]] = set()

    async def one(i: int) -> None:
        call = traffic.next()
        messages: Any = call.messages
        await clients[i % len(clients)].chat.completions.create(
            model=call.model, messages=messages, temperature=0
        )

    while not until(sent):
        task = asyncio.create_task(one(sent))
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += 1
        await asyncio.sleep(1 / rate)
    if pending:
        await asyncio.gather(*pending)
    for c in clients:
        await c.close()
    return sent


def run_demo(
    quick: bool, data_dir: Path, report: Path | None, keep_serving: bool, port: int = 8080
) -> dict[str, Any]:
    console = Console()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if data_dir.exists():
        shutil.rmtree(data_dir)
    traffic = Traffic(seed=7)
    teacher = LocalTeacher(traffic.truth, (0.02, 0.06) if quick else (0.2, 0.6))
    config = demo_config(data_dir, teacher.start(), quick, port)
    server = GatewayThread(config, port)
    state = server.state
    server.start()
    base_url = f"http://127.0.0.1:{port}/v1"
    limit_s = 270 if quick else 1150
    t0 = time.monotonic()
    promoted_at: list[float] = []
    snapshot: dict[str, Any] = {"routes": {}, "candidates": []}

    def done(sent: int) -> bool:
        elapsed = time.monotonic() - t0
        if sent % 25 == 0:
            snapshot.update(summary(state))
            live.update(_table(sent, snapshot, elapsed))
            if any(c["state"] == "promoted" for c in snapshot["candidates"]) and not promoted_at:
                promoted_at.append(elapsed)
        after = (time.monotonic() - t0 - promoted_at[0]) if promoted_at else 0
        return elapsed > limit_s or after > (20 if quick else 120)

    with Live(_table(0, snapshot, 0), console=console, refresh_per_second=2) as live:
        sent = asyncio.run(_drive(base_url, traffic, 12.0 if quick else 8.0, done))
    result = summary(state)
    result.update(
        requests_sent=sent,
        seconds=time.monotonic() - t0,
        promoted_after_s=promoted_at[0] if promoted_at else None,
        dashboard=f"{base_url.removesuffix('/v1')}/dashboard",
        clickhouse=config.clickhouse_dsn,
    )
    console.print(_table(sent, result, result["seconds"]))
    console.print(
        f"spend ${Decimal(result['spend_usd']):.4f} vs teacher baseline "
        f"${Decimal(result['baseline_usd']):.4f}: savings "
        f"{result['savings_pct']:.1f}%"
    )
    for e in result["eval"]:
        console.print(
            f"eval  {e['route']}/{e['candidate']}: agreement "
            f"{float(e['agreement']):.1%} on {e['eval_set']} "
            f"({'passed' if e['passed'] else 'failed'} the gate)"
        )
    for a in result["audits"]:
        console.print(
            f"audit {a['route']}/{a['candidate']}: agreement "
            f"{float(a['agreement']):.1%} over {a['n']} audits"
        )
    console.print(
        f"Next: the dashboard at {result['dashboard']} (sign in with {ADMIN_KEY}; run with "
        f"--keep-serving to keep it up), or after the demo: `flywheel report --dsn "
        f"{config.clickhouse_dsn}` and `flywheel query`"
    )
    if report:
        report.write_text(json.dumps(result, indent=2, default=str))
    if keep_serving:
        console.print(f"gateway still serving at {base_url}; Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    server.stop()
    state.store.close()
    return result
