"""Student server latency and throughput on CPU: batch 1 (one client) and batched (many).

The model is a locally built ~1M-parameter base (the size the demo trains), served by
`students.server` over HTTP on 127.0.0.1; requests go through the `openai` SDK.

    python load_tests/bench_students.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import openai
import uvicorn

from distiller.base_model import build_tiny_base
from students.generation import load_student
from students.server import StudentServer, build_student_app

TEXTS = [
    f"ticket {i}: customer {i * 13} reports the parcel is {w}"
    for i, w in enumerate(["late", "lost", "damaged", "early", "missing", "fine"] * 40)
]


def pct(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(url: str, concurrency: int, n: int, max_tokens: int) -> dict[str, float]:
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
    latencies: list[float] = []
    tokens = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal tokens
        async with sem:
            t0 = time.perf_counter()
            r = await client.chat.completions.create(
                model="student",
                max_tokens=max_tokens,
                messages=[{"role": "user", "content": TEXTS[i % len(TEXTS)]}],
            )
            latencies.append(time.perf_counter() - t0)
            tokens += r.usage.completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    await client.close()
    return {
        "concurrency": concurrency,
        "requests": n,
        "p50_ms": pct(latencies, 0.5) * 1e3,
        "p99_ms": pct(latencies, 0.99) * 1e3,
        "req_per_s": n / wall,
        "tokens_per_s": tokens / wall,
    }


def main() -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-students-"))
    base = build_tiny_base(TEXTS, tmp / "base", pretrain_steps=100)
    server = StudentServer(max_batch=16, batch_wait_s=0.005)
    server.put(load_student("student", base))
    uv = uvicorn.Server(
        uvicorn.Config(build_student_app(server), host="127.0.0.1", port=8391, log_level="warning")
    )
    threading.Thread(target=lambda: asyncio.run(uv.serve()), daemon=True).start()
    while not uv.started:
        time.sleep(0.05)
    url = "http://127.0.0.1:8391/v1"
    out: dict[str, object] = {
        "model_parameters": sum(p.numel() for p in server.models["student"].model.parameters())
    }
    asyncio.run(run(url, 1, 10, 16))  # warm up
    out["batch_1"] = asyncio.run(run(url, 1, 100, 16))
    out["batched_16_clients"] = asyncio.run(run(url, 16, 400, 16))
    out["mean_batch_size"] = statistics.fmean(server.batches) if server.batches else 0
    uv.should_exit = True
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
