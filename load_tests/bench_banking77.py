"""Banking77 through the loop, one report per candidate kind and base, against a linear
baseline on the same split.

Loop mode (the default; CPU, embedded ClickHouse):
1. A teacher that answers from Banking77's labels (an oracle standing in for a large model)
   runs on 127.0.0.1; the gateway routes `banking77` to it.
2. Every query (train.csv and test.csv, 13,083) is replayed through the gateway with the
   official `openai` SDK, as an app would send it.
3. The distiller curates the logged traffic and splits it (stable hash); each candidate
   (`--candidates`) is trained and evaluated on that split by the distiller's own code.
Direct mode (`--direct`: for a GPU machine with no ClickHouse): the official train/test
split read from the CSVs, the same per-candidate code.

Per candidate (`banking77_candidates.run_candidate`): agreement; coverage at 95/97/99%
agreement (Wilson lower bound, as the selective gate uses, and point estimate); the 97%
gate at 80% coverage; out-of-scope prompts escalated at the 97% threshold; training time
and tokens/s; serving latency; cost per 1,000 requests against the teacher. Baseline:
TF-IDF (word 1-2-grams + char 2-5-grams) with logistic regression.

    python load_tests/bench_banking77.py --candidates classifier:minilm-l6,lm:local:tiny \
        --out load_tests/results/banking77.json
    python load_tests/bench_banking77.py --direct --data DIR \
        --candidates classifier:minilm-l6,lm:smollm2-135m      # on a GPU
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "banking77"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from banking77_candidates import SYSTEM, baseline, example, run_candidate  # noqa: E402


def read(data: Path, split: str) -> list[tuple[str, str]]:
    if not (data / f"{split}.csv").exists():
        raise SystemExit(f"Banking77 not found at {data} (the repository has it in tests/data)")
    with (data / f"{split}.csv").open() as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def oracle_app(labels: dict[str, str]) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        text = body["messages"][-1]["content"]
        label = labels.get(text, "unknown")
        return web.json_response(
            {
                "id": "oracle",
                "object": "chat.completion",
                "created": 0,
                "model": "oracle",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": label},
                    }
                ],
                "usage": {
                    "prompt_tokens": len(text.split()) + 20,
                    "completion_tokens": 3,
                    "total_tokens": len(text.split()) + 23,
                },
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def replay(base_url: str, key: str, texts: list[str], concurrency: int = 32) -> int:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=2)
    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def one(text: str) -> None:
        nonlocal done
        async with sem:
            await client.chat.completions.create(
                model="banking77",
                temperature=0,
                messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            )
            done += 1

    await asyncio.gather(*(one(t) for t in texts))
    await client.close()
    return done


def _settings(spec: str, args: argparse.Namespace) -> Any:
    from contracts.training import Training

    kind, _, base = spec.partition(":")
    if kind == "classifier":
        return Training(time_budget_s=args.budget)
    if base == "local:tiny":
        return Training(epochs=args.epochs, batch_size=32, max_length=128)
    return Training(
        batch_size=32, max_length=128, time_budget_s=args.budget, epochs=args.lora_epochs
    )


def direct(args: argparse.Namespace) -> dict[str, Any]:
    """The official split from the CSVs: no gateway, no ClickHouse."""
    import random

    train_rows, test_rows = read(args.data, "train"), read(args.data, "test")
    random.Random(0).shuffle(train_rows)
    if args.limit:
        train_rows, test_rows = train_rows[: args.limit], test_rows[: args.limit // 3]
    train_set = [example(i, t, y) for i, (t, y) in enumerate(train_rows)]
    eval_set = [example(100_000 + i, t, y) for i, (t, y) in enumerate(test_rows)]
    work = args.store or Path(tempfile.mkdtemp(prefix="flywheel-b77-"))
    report: dict[str, Any] = {"mode": "direct", "split": "official train/test"}
    if not args.no_baseline:
        report["baseline_tfidf_logreg"] = baseline(train_rows, test_rows)
    report["candidates"] = []
    for spec in args.candidates.split(","):
        print(f"--- {spec}", flush=True)
        out = run_candidate(spec, train_set, eval_set, work, _settings(spec, args))
        print(json.dumps(out), flush=True)
        report["candidates"].append(out)
    return report


def replayed_split(data: Path, limit: int = 0) -> tuple[dict[str, Any], list[Any], list[Any], Path]:
    """Every query replayed through a gateway in front of the oracle teacher, then curated
    and split by the distiller: (what happened, train examples, eval examples, the
    gateway's data folder)."""
    from distiller.curation import curate
    from distiller.datasets import build_dataset
    from flywheel.serve import GatewayThread
    from gateway.config import GatewayConfig

    rows = read(data, "train") + read(data, "test")
    if limit:
        rows = rows[:limit]
    labels = {t: y for t, y in rows}
    port = free_port()
    loop_ = asyncio.new_event_loop()
    runner = web.AppRunner(oracle_app(labels), access_log=None)
    loop_.run_until_complete(runner.setup())
    loop_.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    import threading

    threading.Thread(target=loop_.run_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-b77-"))
    config = GatewayConfig.model_validate(
        {
            "data_dir": str(tmp),
            "server": {"port": free_port()},
            "models": {
                "oracle": {
                    "model": "openai/oracle",
                    "api_base": f"http://127.0.0.1:{port}/v1",
                    "price": {"input_per_million": "2.50", "output_per_million": "10"},
                }
            },
            "apps": {"bank": {"team": "retail", "train_on_traffic": True}},
            "keys": [{"id": "bank", "key": "sk-bank", "app": "bank"}],
            "routes": [
                {"name": "banking77", "match": {"models": ["banking77"]}, "teacher": "oracle"}
            ],
        }
    )
    gw = GatewayThread(config).start()
    report: dict[str, Any] = {"mode": "loop", "split": "the distiller's stable hash split"}
    try:
        t0 = time.perf_counter()
        sent = asyncio.run(replay(gw.base_url, "sk-bank", [t for t, _ in rows]))
        report["replay"] = {"requests": sent, "seconds": time.perf_counter() - t0}
        gw.state.writer.flush(60)
        store = gw.state.store
        curated = curate(store, "banking77")
        ds = build_dataset(store, curated, eval_fraction=0.2)
    finally:
        gw.stop()
    report["curation"] = {
        "kept": len(curated.examples),
        "excluded": dict(curated.excluded),
        "train": len(ds.train),
        "eval": len(ds.eval),
        "eval_set": ds.eval_set_id,
    }
    return report, ds.train, ds.eval, tmp


def loop(args: argparse.Namespace) -> dict[str, Any]:
    """Through the gateway: replay, curate, split, then each candidate."""
    report, train, evals, tmp = replayed_split(args.data, args.limit)
    pairs = lambda exs: [(e.prompt[-1]["content"], e.answer) for e in exs]  # noqa: E731
    report["baseline_tfidf_logreg"] = baseline(pairs(train), pairs(evals))
    report["candidates"] = []
    for spec in args.candidates.split(","):
        print(f"--- {spec}", flush=True)
        out = run_candidate(spec, train, evals, tmp / "models", _settings(spec, args))
        print(json.dumps(out), flush=True)
        report["candidates"].append(out)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--direct", action="store_true", help="from the CSVs, no gateway")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--candidates",
        default="classifier:minilm-l6,lm:local:tiny",
        help="kind:base, comma-separated (lm:smollm2-135m wants a GPU)",
    )
    parser.add_argument("--epochs", type=float, default=6, help="local:tiny epochs")
    parser.add_argument("--budget", type=float, default=900, help="seconds per training run")
    parser.add_argument(
        "--lora-epochs", type=float, default=None, help="LoRA epochs (default: the recipe's)"
    )
    parser.add_argument("--limit", type=int, default=0, help="fewer examples, for a smoke run")
    parser.add_argument("--store", type=Path, help="model store (named bases are cached there)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--out", type=Path)
    ns = parser.parse_args()
    out = direct(ns) if ns.direct else loop(ns)
    print(json.dumps(out, indent=2))
    if ns.out:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps(out, indent=2))
