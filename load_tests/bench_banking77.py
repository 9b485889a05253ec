"""Banking77 through the whole loop, against a linear baseline on the same split.

1. A teacher that answers from Banking77's labels (an oracle standing in for a large model)
   runs on 127.0.0.1; the gateway (embedded ClickHouse) routes `banking77` to it.
2. Every query (train.csv and test.csv, 13,083) is replayed through the gateway with the
   official `openai` SDK, as an app would send it.
3. The distiller curates the logged traffic, splits it (stable hash split), builds a tiny
   base from the traffic, trains a student with trl, and evaluates it on the frozen eval set.
4. Baseline: TF-IDF (word 1-2-grams + char 2-5-grams) with logistic regression, trained and
   scored on the same train/eval split.
Reported: agreement with the teacher, and the share of traffic each can take at >=97%
agreement using its own confidence.

    python load_tests/bench_banking77.py --out load_tests/results/banking77.json
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

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "banking77"
SYSTEM = "Classify the bank customer's message into one of 77 intents. Answer with the intent."


def read(split: str) -> list[tuple[str, str]]:
    with (DATA / f"{split}.csv").open() as f:
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


def baseline(train: list[tuple[str, str]], evals: list[tuple[str, str]]) -> dict[str, Any]:
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    x_train = hstack(
        [words.fit_transform([t for t, _ in train]), chars.fit_transform([t for t, _ in train])]
    ).tocsr()
    x_eval = hstack(
        [words.transform([t for t, _ in evals]), chars.transform([t for t, _ in evals])]
    ).tocsr()
    clf = LogisticRegression(C=20, max_iter=2000)
    t0 = time.perf_counter()
    clf.fit(x_train, [y for _, y in train])
    seconds = time.perf_counter() - t0
    proba = clf.predict_proba(x_eval)
    pred = clf.classes_[proba.argmax(1)]
    conf = proba.max(1)
    from distiller.evaluation import EvalReport, ExampleResult

    report = EvalReport("baseline", "", "exact_match", 0.0, 0)
    report.results = [
        ExampleResult(str(i), float(p == y), bool(p == y), float(c), p, y)
        for i, ((_, y), p, c) in enumerate(zip(evals, pred, conf, strict=True))
    ]
    return {
        "accuracy": report.agreement,
        "train_seconds": seconds,
        "coverage_at_97": report.threshold_for(0.97),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from contracts.policy import Training
    from distiller.base_model import build_tiny_base
    from distiller.curation import curate
    from distiller.datasets import build_dataset
    from distiller.evaluation import evaluate
    from distiller.training import train
    from flywheel.serve import GatewayThread
    from gateway.config import GatewayConfig

    if not DATA.exists():
        raise SystemExit(f"Banking77 not found at {DATA} (see shared/datasets/banking77)")
    rows = read("train") + read("test")
    labels = {t: y for t, y in rows}

    # The oracle teacher in this process, on its own thread and loop.
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(oracle_app(labels), access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    import threading

    threading.Thread(target=loop.run_forever, daemon=True).start()

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
    report: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        sent = asyncio.run(replay(gw.base_url, "sk-bank", [t for t, _ in rows]))
        report["replay"] = {"requests": sent, "seconds": time.perf_counter() - t0}
        gw.state.writer.flush(60)
        store = gw.state.store
        curated = curate(store, "banking77")
        ds = build_dataset(store, curated, eval_fraction=0.2)
        report["curation"] = {
            "kept": len(curated.examples),
            "excluded": dict(curated.excluded),
            "train": len(ds.train),
            "eval": len(ds.eval),
            "eval_set": ds.eval_set_id,
        }
        texts = [SYSTEM] + [e.prompt[-1]["content"] + " " + e.answer for e in ds.train]
        t0 = time.perf_counter()
        base = build_tiny_base(texts, tmp / "base", pretrain_steps=args.pretrain_steps)
        report["base_seconds"] = time.perf_counter() - t0
        result = train(
            base,
            ds.train,
            tmp / "run",
            Training(epochs=args.epochs, batch_size=32, max_length=128),
        )
        report["training"] = {
            "seconds": result.seconds,
            "steps": result.steps,
            "tokens_per_s": result.tokens_per_s,
            "final_loss": result.losses[-1] if result.losses else None,
        }
        t0 = time.perf_counter()
        ev = evaluate(result.merged, "bench", ds.eval_set_id, ds.eval, "exact_match", 0.9, 100)
        report["student"] = {
            "agreement": ev.agreement,
            "wilson_lower": ev.lower_bound(),
            "eval_seconds": time.perf_counter() - t0,
            "examples": ev.n,
            "coverage_at_97": ev.threshold_for(0.97),
        }
        report["baseline_tfidf_logreg"] = baseline(
            [(e.prompt[-1]["content"], e.answer) for e in ds.train],
            [(e.prompt[-1]["content"], e.answer) for e in ds.eval],
        )
    finally:
        gw.stop()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--out", type=Path)
    ns = parser.parse_args()
    out = main(ns)
    print(json.dumps(out, indent=2))
    if ns.out:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps(out, indent=2))
