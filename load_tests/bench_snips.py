"""SNIPS as a JSON route: a `kind: structured` student trained on the teacher's answers
(`{"intent": ..., "slots": {...}}`, slots copied from the text), gated selectively at 0.97,
then scored on the test split it never saw. The distiller's own code, no HTTP (the served
benchmark through `flywheel serve` is the issue's next step).

Data: tests/data/snips (a copy of ../shared/datasets/snips): 13,084 train, 700 valid, 700
test. The student trains on train (`distiller.structured.train_structured` with the
default recipe, or `--epochs`); `distiller.evaluation.evaluate` gates it on valid with
`json_field_match` (parsed structures, exact), threshold 0.97, min_coverage 0.5,
certify_share 0.5; then every test request is answered the way the student server answers
and escalated below the gate's threshold.

    python load_tests/bench_snips.py --out load_tests/results/snips_direct.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DATA = HERE.parent / "tests" / "data" / "snips"
SYSTEM = "Reply with the request as JSON: its intent and its slots."


def examples(split: str) -> list[Any]:
    from distiller.examples import Example

    rows = [json.loads(line) for line in (DATA / f"{split}.jsonl").open()]
    return [
        Example(
            f"{split}-{i}",
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["text"]}],
            json.dumps({"intent": r["intent"], "slots": r["slots"]}),
        )
        for i, r in enumerate(rows)
    ]


def slot_pairs(answer: str) -> Counter[tuple[str, str]]:
    try:
        slots = json.loads(answer).get("slots") or {}
    except (ValueError, AttributeError):
        return Counter()
    return Counter(
        (k, str(v)) for k, vs in slots.items() for v in (vs if isinstance(vs, list) else [vs])
    )


def scores(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Exact answers, intent accuracy, slot F1 (a slot counts when name and value match)
    and per-slot F1 over (student, teacher) answer pairs."""
    exact = sum(s == t for s, t in pairs)
    intent = sum(_intent(s) == _intent(t) for s, t in pairs)
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for s, t in pairs:
        got, want = slot_pairs(s), slot_pairs(t)
        for (name, _), n in (got & want).items():
            tp[name] += n
        for (name, _), n in (got - want).items():
            fp[name] += n
        for (name, _), n in (want - got).items():
            fn[name] += n

    def f1(t: int, p: int, n: int) -> float:
        return round(2 * t / (2 * t + p + n), 4) if t + p + n else 1.0

    names = sorted(set(tp) | set(fn))
    return {
        "exact": round(exact / len(pairs), 4),
        "intent_accuracy": round(intent / len(pairs), 4),
        "slot_f1": f1(sum(tp.values()), sum(fp.values()), sum(fn.values())),
        "slot_f1_by_name": {k: f1(tp[k], fp[k], fn[k]) for k in names},
    }


def _intent(answer: str) -> Any:
    try:
        return json.loads(answer).get("intent")
    except (ValueError, AttributeError):
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    from contracts.agreement import wilson_bounds
    from contracts.training import Training
    from distiller.bases import resolve
    from distiller.evaluation import evaluate, generate
    from distiller.structured import train_structured

    train, valid, test = examples("train"), examples("valid"), examples("test")
    settings = Training(epochs=args.epochs) if args.epochs else Training()
    if args.frozen:
        settings.finetune_encoder = False
    base = resolve("minilm-l6", args.store)
    t0 = time.perf_counter()
    result = train_structured(base, train, args.store / "run", settings)
    train_s = time.perf_counter() - t0
    report = evaluate(
        result.merged, "snips", "valid", valid, "json_field_match", 0.97, 50, None, None, 0.5, 0.5
    )
    threshold = report.serving_threshold()
    t0 = time.perf_counter()
    answers = generate(result.merged, [e.prompt for e in test])
    answer_ms = (time.perf_counter() - t0) * 1000 / len(test)
    pairs = [(text, e.answer) for (text, _), e in zip(answers, test, strict=True)]
    kept = [
        (text, e.answer)
        for (text, conf), e in zip(answers, test, strict=True)
        if threshold is not None and conf >= threshold
    ]
    agree = sum(s == t for s, t in kept)
    # The best any threshold could do on test (an oracle, for comparison with the gate's).
    ranked = sorted(zip(answers, test, strict=True), key=lambda p: -p[0][1])
    best, hits = 0, 0
    for k, ((text, _), e) in enumerate(ranked, start=1):
        hits += text == e.answer
        if wilson_bounds(hits, k)[0] >= 0.97:
            best = k
    cert = report.certified()
    log = json.loads((args.store / "run" / "training_log.json").read_text())
    return {
        "benchmark": "snips_structured_direct",
        "train_examples": len(train),
        "train_seconds": round(train_s, 1),
        "finetuned": log["finetuned"],
        "steps": log["steps"],
        "fields": log["fields"],
        "unlearnable": log["unlearnable"],
        "examples_unreadable": log["examples_unreadable"],
        "gate_passed": report.passed(),
        "threshold": threshold,
        "valid_agreement": round(report.agreement, 4),
        "certified": cert.as_dict() if cert else None,
        "test": scores(pairs),
        "test_served_share": round(len(kept) / len(test), 4),
        "test_served_exact": round(agree / max(1, len(kept)), 4),
        "test_served_exact_wilson_lower": round(wilson_bounds(agree, len(kept))[0], 4),
        "test_oracle_coverage_at_097": round(best / len(test), 4),
        "answer_ms_per_request": round(answer_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, default=Path("/tmp/flywheel-bench-snips"))
    parser.add_argument("--epochs", type=float, help="training.epochs (default: the recipe's)")
    parser.add_argument("--frozen", action="store_true", help="training.finetune_encoder: false")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.store.mkdir(parents=True, exist_ok=True)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
