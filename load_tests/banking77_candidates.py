"""One candidate on Banking77: train it with the distiller's own code, evaluate it on the
eval split with the selective gate, then measure what a router would see: coverage at
95/97/99% agreement, out-of-scope prompts escalated, serving latency, cost per 1,000 requests.

Shared by `bench_banking77.py` (through the gateway, on CPU) and its `--direct` mode (from
the CSVs, no ClickHouse: for a GPU machine that has only torch and friends). Imports only
what runs there: contracts, distiller's training and evaluation, students.
"""

from __future__ import annotations

import statistics
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from contracts.training import Training
from distiller.base_model import build_tiny_base
from distiller.bases import resolve
from distiller.classifier import split_calibration, train_classifier
from distiller.evaluation import EvalReport, ExampleResult, evaluate
from distiller.examples import Example
from distiller.training import TrainResult, train
from students.generation import Request, generate_batch, load_student

SYSTEM = "Classify the bank customer's message into one of 77 intents. Answer with the intent."

# Questions a bank's intent router should not answer on its own (nothing like Banking77).
OUT_OF_SCOPE = [
    "What's the weather going to be like in Lisbon tomorrow?",
    "Can you recommend a good pasta recipe for dinner?",
    "Who won the football match last night?",
    "Translate 'good morning' into Japanese.",
    "How tall is Mount Everest?",
    "Write me a short poem about autumn leaves.",
    "What time does the train to Manchester leave?",
    "How do I fix a leaking kitchen tap?",
    "Tell me a joke about penguins.",
    "What is the capital of Australia?",
    "How many calories are in a banana?",
    "Book me a table for two at an Italian restaurant.",
    "What's a good name for a golden retriever puppy?",
    "How do I reset my wifi router?",
    "Explain how photosynthesis works.",
    "Which planet is closest to the sun?",
    "Play some relaxing jazz music.",
    "How long should I boil an egg?",
    "What are the symptoms of the flu?",
    "Set an alarm for 6:30 tomorrow morning.",
    "Who wrote Pride and Prejudice?",
    "How do I change a flat tyre on my bike?",
    "What's the best way to learn the guitar?",
    "Is it going to snow this weekend?",
    "Recommend a science fiction novel.",
    "How do I get rid of weeds in my garden?",
    "What is the speed of light?",
    "Find me cheap flights to Rome in May.",
    "How do you say thank you in German?",
    "What's the difference between a crocodile and an alligator?",
    "How many players are on a rugby team?",
    "Give me a workout plan for beginners.",
    "What's on TV tonight?",
    "How do I make sourdough bread?",
    "Which vitamins are in spinach?",
    "Can cats eat chocolate?",
    "When was the Eiffel Tower built?",
    "How do I unclog a shower drain?",
    "Suggest a board game for four people.",
    "What's the population of Canada?",
]

# Serving prices (USD per million tokens) as the example policy sets them, and the teacher's.
PRICES = {
    "teacher": (Decimal("2.50"), Decimal("10")),  # gpt-4o
    "lm": (Decimal("0.02"), Decimal("0.04")),
    "classifier": (Decimal("0.005"), Decimal("0.005")),
}


def example(i: int, text: str, label: str) -> Example:
    return Example(
        f"b77-{i}",
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        label,
    )


def _coverage(report: EvalReport, target: float) -> dict[str, float]:
    """At the target: the share kept with the Wilson lower bound (what the gate uses) and
    the point estimate (the curve)."""
    saved = report.threshold
    report.threshold = target
    chosen = report.selection()
    report.threshold = saved
    point = report.threshold_for(target)
    return {
        "coverage_wilson": chosen.coverage if chosen else 0.0,
        "min_confidence": chosen.min_confidence if chosen else 1.0,
        "coverage_point": point["coverage"] if point else 0.0,
    }


def _latency(student: Any, prompts: list[list[dict[str, Any]]]) -> dict[str, float]:
    singles = []
    for p in prompts[:30]:
        t0 = time.perf_counter()
        generate_batch(student, [Request(p, 24)])
        singles.append(time.perf_counter() - t0)
    batch = [Request(p, 24) for p in prompts[:32]]
    t0 = time.perf_counter()
    generate_batch(student, batch)
    batched = time.perf_counter() - t0
    return {
        "p50_ms_batch1": 1000 * statistics.median(singles),
        "requests_per_s_batch32": len(batch) / batched,
    }


def _cost_per_1000(kind: str, kept: float, eval_set: list[Example]) -> dict[str, str]:
    """Per 1,000 requests: the student's tokens at its price, plus the teacher's for the
    share it escalates; against the teacher answering all (tokens ~4 characters each)."""
    tin = sum(len(SYSTEM) + len(e.prompt[-1]["content"]) for e in eval_set) / 4 / len(eval_set)
    tout = sum(len(e.answer) for e in eval_set) / 4 / len(eval_set)
    ti, to = Decimal(str(tin)), Decimal(str(tout))
    per_m = Decimal(1_000_000)
    teacher = (PRICES["teacher"][0] * ti + PRICES["teacher"][1] * to) / per_m * 1000
    student = (PRICES[kind][0] * ti + PRICES[kind][1] * to) / per_m * 1000
    flywheel = student + teacher * (1 - Decimal(str(kept)))
    return {
        "teacher_usd": f"{teacher:.4f}",
        "flywheel_usd": f"{flywheel:.4f}",
        "cut_percent": f"{(1 - flywheel / teacher) * 100:.1f}",
    }


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
    report = EvalReport("baseline", "", "exact_match", 0.97, 0)
    report.results = [
        ExampleResult(str(i), float(p == y), bool(p == y), float(c), p, y)
        for i, ((_, y), p, c) in enumerate(zip(evals, pred, conf, strict=True))
    ]
    return {
        "candidate": "baseline: TF-IDF + logistic regression",
        "agreement": report.agreement,
        "coverage": {str(t): _coverage(report, t) for t in (0.95, 0.97, 0.99)},
        "train_seconds": seconds,
    }


def run_candidate(
    spec: str,
    train_set: list[Example],
    eval_set: list[Example],
    workdir: Path,
    settings: Training,
) -> dict[str, Any]:
    """`spec` is `kind:base`, e.g. `classifier:minilm-l6`, `lm:smollm2-135m`, `lm:local:tiny`."""
    kind, _, base_name = spec.partition(":")
    out_dir = workdir / spec.replace(":", "_")
    t0 = time.perf_counter()
    if base_name == "local:tiny":
        texts = [SYSTEM] + [t for e in train_set for t in (e.prompt[-1]["content"], e.answer)]
        base = str(build_tiny_base(texts, out_dir / "base", pretrain_steps=300))
    else:
        base = resolve(base_name, workdir, print)
    prepared = time.perf_counter() - t0
    result: TrainResult
    if kind == "classifier":
        result = train_classifier(base, train_set, out_dir, settings)
    else:
        fit, dev = split_calibration(train_set, settings.calibration_fraction)
        result = train(base, fit, out_dir, settings, dev or None)
    t0 = time.perf_counter()
    report = evaluate(
        result.merged, spec, "eval", eval_set, "exact_match", 0.97, 50, None, None, 0.8
    )
    eval_seconds = time.perf_counter() - t0
    at97 = _coverage(report, 0.97)  # the threshold a 97% selective gate would serve with
    student = load_student(spec, result.merged)
    oos = generate_batch(student, [Request(example(0, q, "").prompt, 24) for q in OUT_OF_SCOPE])
    threshold = at97["min_confidence"]
    escalated = sum(1 for r in oos if r["confidence"] < threshold) / len(oos)
    return {
        "candidate": spec,
        "device": result.device,
        "train_examples": len(train_set),
        "eval_examples": report.n,
        "agreement": report.agreement,
        "coverage": {str(t): _coverage(report, t) for t in (0.95, 0.97, 0.99)},
        "gate_97_at_min_coverage_80": report.passed(),
        "out_of_scope_escalated_at_97": escalated,
        "base_prepare_seconds": prepared,
        "train_seconds": result.seconds,
        "train_steps": result.steps,
        "tokens_per_s": result.tokens_per_s,
        "eval_seconds": eval_seconds,
        "serving": _latency(student, [e.prompt for e in eval_set]),
        "cost_per_1000_at_97": _cost_per_1000(kind, at97["coverage_wilson"], eval_set),
        "samples": [
            {"student": r.student, "teacher": r.teacher, "confidence": round(r.confidence, 4)}
            for r in report.results[:6]
        ],
    }
