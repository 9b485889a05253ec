"""Gateway overhead and throughput against a direct call and LiteLLM's proxy, in one run.

Layout on a 2-core machine: the server under test (gateway or LiteLLM proxy) is pinned to
core 0; the fake upstream and this load generator share core 1. Every target is called
with the same requests:
- open loop at a fixed rate (default 200 req/s): latency p50/p99; overhead = target minus
  direct at the same percentile;
- closed loop at several concurrencies: the highest sustained throughput;
- streaming at a fixed rate: time to first byte, overhead against direct.
The gateway logs to its embedded ClickHouse the whole time (logging ON, through the durable
journal), and the run checks afterwards that every request it answered is in ClickHouse. A
second gateway run with `log.journal: false` (rows in memory only) gives the durable path's
cost in the same run.

    python load_tests/bench_gateway.py --out load_tests/results/gateway.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_targets import BODY, KEY, SURFACE_BODIES, gateway_config, litellm_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def spawn(cmd: list[str], core: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", str(core), *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})},
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def wait_ready(url: str, within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url, headers={"Authorization": f"Bearer {KEY}"}) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{url} did not come up")


async def one(
    session: aiohttp.ClientSession, url: str, stream: bool, body: dict[str, Any] | None = None
) -> tuple[float, bool]:
    """Latency (or time to first byte when streaming) in seconds, and success."""
    base = body or next((b for path, b in SURFACE_BODIES.items() if url.endswith(path)), BODY)
    body = {**base, "stream": True} if stream else base
    t0 = time.perf_counter()
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        if stream:
            await r.content.readany()
            first = time.perf_counter() - t0
            await r.read()
            return first, r.status == 200
        await r.read()
        return time.perf_counter() - t0, r.status == 200


async def open_loop(
    url: str, rate: float, seconds: float, stream: bool = False, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(20):  # warm the connection pool (and, on a cached route, the cache)
            await one(session, url, stream, body)

        async def fire() -> None:
            nonlocal errors
            try:
                latency, ok = await one(session, url, stream, body)
                latencies.append(latency)
                errors += 0 if ok else 1
            except aiohttp.ClientError:
                errors += 1

        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire()))
        await asyncio.gather(*tasks)
    return {
        "rate": rate,
        "requests": n,
        "errors": errors,
        "p50_ms": pct(latencies, 0.50) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


async def closed_loop(url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    done = 0
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop_at:
                try:
                    _, ok = await one(session, url, False)
                    done += 1 if ok else 0
                    errors += 0 if ok else 1
                except aiohttp.ClientError:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"concurrency": concurrency, "rps": done / elapsed, "ok": done, "errors": errors}


async def measure(name: str, base: str, args: argparse.Namespace) -> dict[str, Any]:
    url = f"{base}/chat/completions"
    print(f"[{name}] open loop {args.rate}/s", flush=True)
    result: dict[str, Any] = {"latency": await open_loop(url, args.rate, args.seconds)}
    print(f"[{name}] open loop {args.compare_rate}/s", flush=True)
    result["latency_low_rate"] = await open_loop(url, args.compare_rate, args.seconds)
    print(f"[{name}] streaming {args.stream_rate}/s", flush=True)
    result["stream"] = await open_loop(url, args.stream_rate, args.seconds, stream=True)
    result["throughput"] = []
    for c in args.concurrency:
        print(f"[{name}] closed loop c={c}", flush=True)
        result["throughput"].append(await closed_loop(url, c, args.seconds))
    result["max_rps"] = max(t["rps"] for t in result["throughput"])
    if name == "gateway" and not args.skip_surfaces:
        # The Responses and Messages APIs, translated to the same chat upstream, at the
        # same rate in the same run: their overhead next to chat completions'.
        for path in ("/responses", "/messages"):
            print(f"[{name}] {path} open loop {args.compare_rate}/s", flush=True)
            result[path] = await open_loop(f"{base}{path}", args.compare_rate, args.seconds)
        # The same request on a route with a response cache: every call after the first
        # is a hit, answered without the upstream.
        print(f"[{name}] cache hits open loop {args.compare_rate}/s", flush=True)
        result["cache_hits"] = await open_loop(
            url, args.compare_rate, args.seconds, body={**BODY, "model": "gpt-4o-cached"}
        )
    print(f"[{name}] {json.dumps(result)}", flush=True)
    return result


async def run_gateway(
    name: str, tmp: Path, upstream_url: str, args: argparse.Namespace, journal: bool
) -> dict[str, Any]:
    port = free_port()
    config = gateway_config(tmp, upstream_url, port, journal)
    gw = spawn(["flywheel", "serve", "--config", str(config), "--log-level", "warning"], 0)
    try:
        await wait_ready(f"http://127.0.0.1:{port}/v1/models")
        result = await measure(name, f"http://127.0.0.1:{port}/v1", args)
    finally:
        stop(gw)
    result["rows_logged"], result["ids_logged"], result["rows_by_status"] = logged_rows(config)
    return result


def logged_rows(config: Path) -> tuple[int, int, dict[str, int]]:
    """Rows, distinct request ids, and rows by status in the gateway's store."""
    code = (
        "import json; from gateway.config import load_config; from store import open_store;"
        f"s = open_store(load_config({str(config)!r}).clickhouse_dsn);"
        "n, u = s.query_rows('SELECT count(), uniqExact(request_id) FROM requests')[0];"
        "st = dict(s.query_rows('SELECT status, count() FROM requests GROUP BY status'));"
        "print(json.dumps([n, u, st]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, u, by_status = json.loads(out.stdout.strip().splitlines()[-1])
    return int(n), int(u), {str(k): int(v) for k, v in by_status.items()}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    up_port = free_port()
    upstream_url = f"http://127.0.0.1:{up_port}/v1"
    upstream = spawn(
        [sys.executable, "-m", "tests.support.fake_upstream", "--port", str(up_port)], core=1
    )
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count()},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    try:
        await wait_ready(f"{upstream_url}/models")
        report["direct"] = await measure("direct", upstream_url, args)

        report["gateway"] = await run_gateway("gateway", tmp, upstream_url, args, journal=True)
        if not args.skip_no_journal:
            report["gateway_no_journal"] = await run_gateway(
                "gateway_no_journal", tmp, upstream_url, args, journal=False
            )

        if not args.skip_litellm and shutil.which(args.litellm_bin):
            ll_port = free_port()
            ll = spawn(
                [
                    args.litellm_bin,
                    "--config",
                    str(litellm_config(tmp, upstream_url)),
                    "--port",
                    str(ll_port),
                    "--num_workers",
                    "1",
                ],
                0,
            )
            try:
                await wait_ready(f"http://127.0.0.1:{ll_port}/v1/models", within_s=240)
                report["litellm"] = await measure("litellm", f"http://127.0.0.1:{ll_port}/v1", args)
            finally:
                stop(ll)
    finally:
        stop(upstream)
        shutil.rmtree(tmp, ignore_errors=True)

    d, g = report["direct"], report["gateway"]
    summary = {
        "overhead_p50_ms": g["latency"]["p50_ms"] - d["latency"]["p50_ms"],
        "overhead_p99_ms": g["latency"]["p99_ms"] - d["latency"]["p99_ms"],
        "stream_ttfb_overhead_p50_ms": g["stream"]["p50_ms"] - d["stream"]["p50_ms"],
        "stream_ttfb_overhead_p99_ms": g["stream"]["p99_ms"] - d["stream"]["p99_ms"],
        "gateway_max_rps": g["max_rps"],
        # Every request the gateway answered (warm-ups included) must be a row in ClickHouse.
        "gateway_requests_answered": sum(
            g[p]["requests"] + 20 for p in ("latency", "latency_low_rate", "stream")
        )
        + sum(t["ok"] + t["errors"] for t in g["throughput"]),
        "gateway_rows_logged": g["rows_logged"],
        "gateway_distinct_ids_logged": g["ids_logged"],
        "gateway_rows_by_status": g["rows_by_status"],
        "direct_max_rps": d["max_rps"],
    }
    for path in ("/responses", "/messages"):
        if path in g:  # at the low rate, next to chat completions' low-rate overhead
            low_direct = d["latency_low_rate"]
            summary[f"{path[1:]}_overhead_p50_ms"] = g[path]["p50_ms"] - low_direct["p50_ms"]
            summary[f"{path[1:]}_overhead_p99_ms"] = g[path]["p99_ms"] - low_direct["p99_ms"]
            summary["gateway_requests_answered"] += g[path]["requests"] + 20
    if "cache_hits" in g:  # gateway time of a hit: no upstream call to subtract
        summary["cache_hit_latency_p50_ms"] = g["cache_hits"]["p50_ms"]
        summary["cache_hit_latency_p99_ms"] = g["cache_hits"]["p99_ms"]
        summary["gateway_requests_answered"] += g["cache_hits"]["requests"] + 20
    if "gateway_no_journal" in report:
        # The durable path's cost: the same gateway with rows kept in memory only.
        nj = report["gateway_no_journal"]
        summary["no_journal_max_rps"] = nj["max_rps"]
        summary["journal_throughput_cost_percent"] = 100 * (1 - g["max_rps"] / nj["max_rps"])
        summary["no_journal_overhead_p50_ms"] = nj["latency"]["p50_ms"] - d["latency"]["p50_ms"]
        summary["no_journal_overhead_p99_ms"] = nj["latency"]["p99_ms"] - d["latency"]["p99_ms"]
    low = {
        k: report[k]["latency_low_rate"] for k in ("direct", "gateway", "litellm") if k in report
    }
    summary["low_rate_overhead_p50_ms"] = {
        k: v["p50_ms"] - low["direct"]["p50_ms"] for k, v in low.items() if k != "direct"
    }
    summary["low_rate_overhead_p99_ms"] = {
        k: v["p99_ms"] - low["direct"]["p99_ms"] for k, v in low.items() if k != "direct"
    }
    if "litellm" in report:
        lt = report["litellm"]
        summary["litellm_max_rps"] = lt["max_rps"]
        summary["gateway_vs_litellm_throughput"] = g["max_rps"] / lt["max_rps"]
        summary["litellm_overhead_p50_ms"] = lt["latency"]["p50_ms"] - d["latency"]["p50_ms"]
        summary["litellm_overhead_p99_ms"] = lt["latency"]["p99_ms"] - d["latency"]["p99_ms"]
    report["summary"] = summary
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--stream-rate", type=float, default=200)
    parser.add_argument(
        "--compare-rate",
        type=float,
        default=40,
        help="a rate LiteLLM's proxy sustains, for a like-for-like latency",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument(
        "--litellm-bin",
        default="litellm",
        help="LiteLLM's proxy command (e.g. from its own venv: litellm>=1.110 moved the "
        "proxy to a package of its own)",
    )
    parser.add_argument(
        "--skip-surfaces", action="store_true", help="skip /v1/responses and /v1/messages"
    )
    parser.add_argument(
        "--skip-no-journal", action="store_true", help="skip the journal-off comparison run"
    )
    parser.add_argument("--out", type=Path)
    ns = parser.parse_args()
    uvloop.install()
    out = asyncio.run(main(ns))
    print(json.dumps(out["summary"], indent=2))
    if ns.out:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps(out, indent=2))
