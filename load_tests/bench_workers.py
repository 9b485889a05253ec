"""`flywheel serve --workers 1` against `--workers 2`, and the cost of shared state in Redis.

Layout on this 2-core VM: Debian's redis-server, the fake upstream and the load generator run
beside the gateway (nothing pinned: N workers need the cores), logging to the embedded store
on, a route with a requests-per-minute limit and a budget (generous: nothing is refused, but
every request reserves, settles and takes a token).

1. Throughput: closed loop (64 in flight) for `--seconds`, `--workers 1` then `--workers 2`,
   both with Redis: the ratio.
2. Redis on against off: one worker, open loop at `--rate` (200/s), p50/p99 of the gateway
   with the limit and budget in Redis against the same gateway with them in-process.
3. Load on the shared parts at that rate: Redis commands and network bytes per request
   (`INFO commandstats` / `INFO stats` before and after), ClickHouse rows and bytes on disk
   per request; scaled to 1,000 req/s.

    python load_tests/bench_workers.py --out load_tests/results/workers.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from bench_gateway import closed_loop, free_port, open_loop, stop, wait_ready
from bench_targets import gateway_config


def redis_info(port: int) -> dict[str, float]:
    import redis

    client = redis.Redis(port=port)
    stats = client.info("stats")
    calls = sum(int(v["calls"]) for v in client.info("commandstats").values())
    return {
        "commands": float(calls),
        "net_in": float(stats["total_net_input_bytes"]),
        "net_out": float(stats["total_net_output_bytes"]),
    }


def config_with(tmp: Path, upstream: str, port: int, redis_port: int | None) -> Path:
    path = gateway_config(tmp, upstream, port)
    raw = yaml.safe_load(path.read_text())
    raw["data_dir"] = str(tmp / f"gw-{port}")
    if redis_port is not None:
        raw["redis"] = {"url": f"redis://127.0.0.1:{redis_port}/0"}
    raw["routes"][0]["rate_limit"] = {"requests_per_minute": 10_000_000}
    raw["budgets"] = [{"name": "bench", "app": "bench", "period": "day", "limit_usd": "1000000"}]
    path = tmp / f"gw-{port}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def store_figures(config: Path) -> dict[str, float]:
    code = (
        "import json; from gateway.config import load_config; from store import open_store;"
        f"s = open_store(load_config({str(config)!r}).clickhouse_dsn);"
        'r = s.query_rows("SELECT sum(rows), sum(bytes_on_disk) FROM system.parts'
        " WHERE active AND table = 'requests'\")[0];"
        "print(json.dumps([int(r[0]), int(r[1])]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rows, size = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rows": rows, "bytes_on_disk": size}


def popen(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)


async def serve(config: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    cmd = ["flywheel", "serve", "--config", str(config), "--workers", str(workers)]
    proc = popen([*cmd, "--log-level", "warning"])
    await wait_ready(f"http://127.0.0.1:{port}/v1/models")
    return proc


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-workers-"))
    redis_port, up_port = free_port(), free_port()
    redis_bin = shutil.which("redis-server") or "redis-server"
    redis_proc = popen([redis_bin, "--port", str(redis_port), "--save", "", "--appendonly", "no"])
    upstream_url = f"http://127.0.0.1:{up_port}/v1"
    upstream = popen([sys.executable, "-m", "tests.support.fake_upstream", "--port", str(up_port)])
    report: dict[str, Any] = {"seconds": args.seconds, "rate": args.rate}
    try:
        await wait_ready(f"{upstream_url}/models")
        for workers in (1, 2):
            port = free_port()
            proc = await serve(config_with(tmp, upstream_url, port, redis_port), port, workers)
            try:
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                await closed_loop(url, 16, 2)  # warm up
                report[f"workers_{workers}"] = await closed_loop(url, 64, args.seconds)
            finally:
                stop(proc)
        w1, w2 = report["workers_1"]["rps"], report["workers_2"]["rps"]
        report["throughput_ratio_2_to_1"] = round(w2 / w1, 2) if w1 else None
        for shared in (False, True):
            port = free_port()
            config = config_with(tmp, upstream_url, port, redis_port if shared else None)
            proc = await serve(config, port, 1)
            try:
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                await open_loop(url, args.rate, 2)  # warm up
                before = redis_info(redis_port)
                result = await open_loop(url, args.rate, args.seconds)
                after = redis_info(redis_port)
            finally:
                stop(proc)
            name = "redis_on" if shared else "redis_off"
            report[name] = result
            if shared:
                n = max(1, int(result["requests"]) - int(result["errors"]))
                per = {k: (after[k] - before[k]) / n for k in after}
                stored = store_figures(config)
                report["per_request"] = {
                    "redis_commands": round(per["commands"], 2),
                    "redis_bytes_in": round(per["net_in"], 1),
                    "redis_bytes_out": round(per["net_out"], 1),
                    "clickhouse_bytes_on_disk": round(
                        stored["bytes_on_disk"] / max(1, stored["rows"]), 1
                    ),
                }
                report["per_1000_rps"] = {
                    "redis_commands_per_s": round(per["commands"] * 1000),
                    "redis_mbit_per_s": round((per["net_in"] + per["net_out"]) * 1000 * 8 / 1e6, 2),
                    "clickhouse_mb_per_s_on_disk": round(
                        stored["bytes_on_disk"] / max(1, stored["rows"]) * 1000 / 1e6, 3
                    ),
                }
    finally:
        stop(upstream)
        redis_proc.kill()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = json.dumps(asyncio.run(main(args)), indent=2)
    print(out)
    if args.out:
        args.out.write_text(out + "\n")
