"""Few-shot candidates on Banking77: how well each retriever finds examples, and how much
traffic a few-shot candidate can take at 97% agreement, next to the TF-IDF + logistic
regression baseline (and the fine-tuned students' recorded results), with its serving cost.

With `--replay`, the split is the distiller's instead: all 13,083 queries replayed through
the gateway in front of an oracle teacher (`bench_banking77.replayed_split`), curated, and
split by the stable hash.

1. Retrievers, on the whole official split (10,003 train / 3,080 test): `ngram` (hashed
   character n-grams) against `minilm-l6` (MiniLM-L6 sentence embeddings): whether the
   nearest example's label is the right one, whether the right one is among the k shown,
   and what building the index and one lookup cost.
2. The candidate itself, through the distiller's own code (`distiller.few_shot`, what the
   gate runs): SmolLM2-135M-Instruct (a base on our student server, real HTTP, batched)
   prompted with the k nearest examples, on `--eval` test queries per retriever. Coverage
   at a target is the share kept at a confidence threshold with the Wilson lower bound of
   agreement on it reaching the target (what the selective gate uses).
3. Cost per 1,000 requests: the candidate's own tokens (the examples make its prompts long)
   at the student server's price, plus the teacher for what it escalates, against the
   teacher (gpt-4o prices) for all.

    python load_tests/bench_few_shot.py --data tests/data/banking77 \
        --out load_tests/results/few_shot.json
    python load_tests/bench_few_shot.py --replay --retrievers minilm-l6 --eval 200 \
        --out load_tests/results/few_shot_replayed.json     # through the gateway first
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from banking77_candidates import PRICES, SYSTEM, _coverage, baseline, example
from bench_gateway import free_port, stop

from contracts.model_config import ModelConfig
from contracts.policy import Gate
from distiller.bases import resolve
from distiller.evaluation import EvalReport
from distiller.examples import Example
from distiller.few_shot import build_and_evaluate
from students.few_shot import FewShotIndex


@contextlib.contextmanager
def student_server(base: str) -> Iterator[str]:
    """`flywheel students serve` with SmolLM2 loaded as `smollm2`; yields its base URL."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        ["flywheel", "students", "serve", "--port", str(port), "--model", f"smollm2={base}"],
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if "smollm2" in httpx.get(f"{url}/models", timeout=5).text:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield url
    finally:
        stop(proc)


def rows(path: Path) -> list[tuple[str, str]]:
    with path.open() as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def retrieval(index: FewShotIndex, evals: list[Example], build_s: float, k: int) -> dict[str, Any]:
    top1 = topk = vote = 0
    lat = []
    for ex in evals:
        t0 = time.perf_counter()
        shots = index.nearest(ex.prompt, k)
        lat.append(time.perf_counter() - t0)
        labels = [s.answer for s in shots]
        top1 += labels[0] == ex.answer
        topk += ex.answer in labels
        vote += max(set(labels), key=labels.count) == ex.answer
    n = len(evals)
    return {
        "nearest_label_right": top1 / n,
        f"right_label_in_top_{k}": topk / n,
        f"majority_of_{k}_right": vote / n,
        "index_build_s": build_s,
        "lookup_p50_ms": 1000 * statistics.median(lat),
    }


def cost_per_1000(report: EvalReport, tokens: int, kept: float, evals: list[Example]) -> dict:
    """The candidate's measured tokens per request (prompt with examples + answer) at the
    student server's price; the teacher's at gpt-4o prices (~4 characters a token)."""
    per_m, n = Decimal(1_000_000), max(1, report.n)
    mine = Decimal(tokens) / n * PRICES["lm"][0] / per_m * 1000  # input price for all tokens
    tin = Decimal(sum(len(SYSTEM) + len(e.prompt[-1]["content"]) for e in evals)) / 4 / len(evals)
    tout = Decimal(sum(len(e.answer) for e in evals)) / 4 / len(evals)
    teacher = (PRICES["teacher"][0] * tin + PRICES["teacher"][1] * tout) / per_m * 1000
    total = mine + teacher * (1 - Decimal(str(kept)))
    return {
        "tokens_per_request": float(Decimal(tokens) / n),
        "candidate_usd": f"{mine:.5f}",
        "teacher_usd": f"{teacher:.4f}",
        "flywheel_usd": f"{total:.4f}",
        "cut_percent": f"{(1 - total / teacher) * 100:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "tests" / "data" / "banking77",
    )
    parser.add_argument("--eval", type=int, default=300, help="test queries for the LM run")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--retrievers", default="ngram,minilm-l6")
    parser.add_argument("--skip-lm", action="store_true")
    parser.add_argument(
        "--replay", action="store_true", help="the split of the traffic replayed via the gateway"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.replay:
        # The split the distiller makes of the traffic: every query replayed through the
        # gateway (oracle teacher), curated, split by its stable hash.
        from bench_banking77 import replayed_split

        out["replayed"], train, test, _ = replayed_split(args.data)
        train_rows = [(e.prompt[-1]["content"], e.answer) for e in train]
        test_rows = [(e.prompt[-1]["content"], e.answer) for e in test]
    else:
        train_rows, test_rows = rows(args.data / "train.csv"), rows(args.data / "test.csv")
        train = [example(i, t, y) for i, (t, y) in enumerate(train_rows)]
        test = [example(100_000 + i, t, y) for i, (t, y) in enumerate(test_rows)]
    sample = random.Random(77).sample(test, min(args.eval, len(test)))
    work = Path(tempfile.mkdtemp(prefix="flywheel-fewshot-"))
    out |= {"train": len(train), "test": len(test), "k": args.k, "lm_eval": len(sample)}
    print("baseline: TF-IDF + logistic regression", flush=True)
    out["baseline"] = baseline(train_rows, test_rows)
    indexes: dict[str, FewShotIndex] = {}
    for retriever in args.retrievers.split(","):
        encoder = resolve("minilm-l6", work, print) if retriever == "minilm-l6" else ""
        t0 = time.perf_counter()
        triples = [(e.request_id, e.prompt, e.answer) for e in train]
        indexes[retriever] = FewShotIndex.build(triples, retriever, args.k, "b77", encoder)  # type: ignore[arg-type]
        built = time.perf_counter() - t0
        print(f"retriever {retriever}: built in {built:.1f} s", flush=True)
        out[f"retrieval_{retriever}"] = retrieval(indexes[retriever], test, built, args.k)
        print(json.dumps(out[f"retrieval_{retriever}"]), flush=True)
    if not args.skip_lm:
        base = resolve("smollm2-135m", work, print)
        with student_server(base) as url:
            model = ModelConfig(model="flywheel/smollm2", api_base=url, timeout_s=600)
            for retriever in indexes:
                print(f"few-shot SmolLM2 with {retriever}: {len(sample)} queries", flush=True)
                result, report = build_and_evaluate(
                    retriever,  # type: ignore[arg-type]
                    args.k,
                    indexes[retriever].encoder_path,
                    model,
                    train,
                    sample,
                    work / retriever,
                    f"few-shot-{retriever}",
                    "b77-test-sample",
                    "b77",
                    Gate(metric="exact_match", threshold=0.97, min_examples=50, min_coverage=0.5),
                    max_tokens=24,
                )
                at97 = _coverage(report, 0.97)
                out[f"few_shot_{retriever}"] = {
                    "agreement": report.agreement,
                    "coverage": {str(t): _coverage(report, t) for t in (0.95, 0.97, 0.99)},
                    "seconds": result.seconds,
                    "requests_per_s": report.n / result.seconds,
                    "cost_per_1000_at_97": cost_per_1000(
                        report, result.tokens, at97["coverage_wilson"], sample
                    ),
                    "samples": [
                        {"answer": r.student, "teacher": r.teacher, "confidence": r.confidence}
                        for r in report.results[:5]
                    ],
                }
                print(json.dumps(out[f"few_shot_{retriever}"], default=str), flush=True)
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
