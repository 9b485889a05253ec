"""What a response-cache hit costs: gateway time of exact and semantic hits, next to a miss
(the same request through to the upstream) and a direct call to the upstream.

Layout as in `bench_gateway.py`: the gateway on core 0, the fake upstream and this client on
core 1. Requests are sent one at a time (no queueing: the figures are the gateway's own
work). Client latency is what the caller waited; gateway time is each row's `latency_us` in
ClickHouse (from the request's arrival in the handler to its row being finished), read
after the gateway stops. The target (issue 19): an exact hit in under 0.5 ms of gateway
time at p99.

    python load_tests/bench_cache.py --out load_tests/results/cache.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import free_port, pct, spawn, stop, wait_ready
from bench_targets import BODY, KEY

QUESTION = "My card has not arrived yet, what should I do?"


def config(tmp: Path, upstream: str, port: int) -> Path:
    route = {"teacher": "teacher"}
    cfg = {
        "data_dir": str(tmp / "gw"),
        "server": {"port": port},
        "models": {"teacher": {"model": "openai/gpt-4o", "api_base": upstream}},
        "apps": {"bench": {"team": "bench", "train_on_traffic": True}},
        "keys": [{"id": "bench", "key": KEY, "app": "bench"}],
        "routes": [
            {"name": "miss", "match": {"models": ["gpt-4o"]}, **route},
            {"name": "exact", "match": {"models": ["exact"]}, "cache": {}, **route},
            {
                "name": "semantic",
                "match": {"models": ["semantic"]},
                "cache": {"semantic": {"threshold": 0.8}},
                "audit": {"share": 0},  # the hits' own cost, without background audits
                **route,
            },
        ],
    }
    path = tmp / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def body(model: str, i: int) -> dict[str, Any]:
    """Exact: the same request each time. Semantic: the question reworded (case and
    punctuation), so each one misses the exact cache and finds the first by similarity."""
    text = QUESTION
    if model == "semantic" and i > 0:
        text = [QUESTION.lower(), QUESTION.upper(), QUESTION.replace(",", ""), QUESTION + "!"][
            i % 4
        ] + " " * (i // 4 % 50)
    msgs = [BODY["messages"][0], {"role": "user", "content": text}]
    if model == "gpt-4o":  # a miss every time: a fresh question
        msgs[1]["content"] = f"{QUESTION} #{i}"
    return {**BODY, "model": model, "messages": msgs}


async def sequential(url: str, model: str, n: int) -> dict[str, Any]:
    lat: list[float] = []
    served: dict[str, int] = {}
    async with aiohttp.ClientSession() as s:
        for i in range(n):
            t0 = time.perf_counter()
            async with s.post(
                url, json=body(model, i), headers={"Authorization": f"Bearer {KEY}"}
            ) as r:
                await r.read()
                lat.append(time.perf_counter() - t0)
                by = r.headers.get("x-flywheel-served-by", "direct")
                served[by] = served.get(by, 0) + 1
    return {
        "requests": n,
        "served_by": served,
        "client_p50_ms": pct(lat, 0.5) * 1000,
        "client_p99_ms": pct(lat, 0.99) * 1000,
    }


def gateway_times(data_dir: Path) -> dict[str, Any]:
    """Rows' gateway time per route and who answered, read from the stopped gateway's store."""
    from store import open_store

    store = open_store(f"chdb://{(data_dir / 'clickhouse').resolve()}", migrate=False)
    rows = store.query_dicts(
        "SELECT route, served_by, count() AS n, quantile(0.5)(latency_us) AS p50, "
        "quantile(0.99)(latency_us) AS p99, max(latency_us) AS worst FROM requests "
        "WHERE kind = 'request' GROUP BY route, served_by ORDER BY route, served_by"
    )
    rows_total, unique = store.query_rows(
        "SELECT count(), uniqExact(request_id) FROM requests WHERE kind = 'request'"
    )[0]
    # Every answer once: more rows than ids would be a batch written twice.
    times: dict[str, Any] = {"rows": int(rows_total), "unique_request_ids": int(unique)}
    return times | {
        f"{r['route']}/{r['served_by']}": {
            "rows": int(r["n"]),
            "gateway_p50_ms": float(r["p50"]) / 1000,
            "gateway_p99_ms": float(r["p99"]) / 1000,
            "gateway_max_ms": float(r["worst"]) / 1000,
        }
        for r in rows
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-cache-"))
    up_port, gw_port = free_port(), free_port()
    upstream = spawn(
        [sys.executable, "-m", "tests.support.fake_upstream", "--port", str(up_port)], 1
    )
    up = f"http://127.0.0.1:{up_port}/v1"
    gw = spawn(
        [
            "flywheel",
            "serve",
            "--config",
            str(config(tmp, up, gw_port)),
            "--log-level",
            "warning",
        ],
        0,
    )
    out: dict[str, Any] = {"requests_per_kind": args.n}
    try:
        await wait_ready(f"{up}/models")
        await wait_ready(f"http://127.0.0.1:{gw_port}/v1/models")
        direct = await sequential(f"{up}/chat/completions", "gpt-4o", args.n)
        out["direct"] = direct
        base = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        for model in ("gpt-4o", "exact", "semantic"):
            print(f"[{model}] {args.n} sequential requests", flush=True)
            out[model] = await sequential(base, model, args.n)
    finally:
        stop(gw)
        stop(upstream)
    out["gateway_time"] = gateway_times(tmp / "gw")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
