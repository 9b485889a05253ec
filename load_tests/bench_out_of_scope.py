"""Out-of-scope traffic on Banking77: a classifier student trained on some intents, served
all of them, behind a 0.97 selective gate. What share of the intents outside its label set
is escalated to the teacher, and what the answers it serves agree, with and without the
scope gate (the student's second gate: cosine distance to its nearest training example).

Two ways an intent is out of scope: `--labelled K` of the held-out intents reached the
teacher before training and it answered them `oos` (the route's label set is the other
intents: a teacher told the labels says so), so the student learns that label and a request
it gives `oos` is escalated; the rest were never in the traffic at all, and only the
confidence threshold and the scope gate can catch them.

The distiller's own code end to end, as the gateway would serve it (no HTTP): the train
split's rows of the kept intents are split by the distiller's stable hash into train and
eval (20%); `distiller.classifier.train_classifier` trains on the first (frozen MiniLM-L6
features and a logistic head on CPU; calibration split and scope threshold inside);
`distiller.evaluation.evaluate` gates it on the second (threshold 0.97, min_coverage 0.5):
half of it (the gate's default `certify_share`) picks the confidence threshold and the other
half certifies it (`certified_*`; `one_eval_set`: the threshold the whole set would pick, as
before certify rows); then every test.csv query (3,080, all 77 intents) is
answered by the student the way the student server answers (`predict_scoped` through
`generate`), and escalated below the threshold, as the router does.

    python load_tests/bench_out_of_scope.py --held-out 17 --labelled 12,17 \
        --out load_tests/results/out_of_scope.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DATA = HERE.parent / "tests" / "data" / "banking77"
SYSTEM = "Name the customer's intent."


def _rows(split: str) -> list[tuple[str, str]]:
    with (DATA / f"{split}.csv").open() as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def _wilson_lower(agree: int, n: int) -> float:
    from contracts.agreement import wilson_bounds

    return wilson_bounds(agree, n)[0]


def run(
    held_out: int,
    labelled: int,
    seed: int,
    store: Path,
    scope_quantile: float | None,
    finetune: bool = False,
) -> dict[str, Any]:
    from contracts.training import Training
    from distiller.bases import resolve
    from distiller.classifier import train_classifier
    from distiller.datasets import split_of
    from distiller.evaluation import evaluate, generate
    from distiller.examples import Example

    intents = sorted({c for _, c in _rows("train")})
    outside_set = random.Random(seed).sample(intents, held_out)
    unseen = set(outside_set)
    answered_oos = set(outside_set[:labelled])  # in the teacher's traffic, answered `oos`

    def example(i: int, text: str, intent: str) -> Example:
        prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
        return Example(f"b77-{i}", prompt, intent)

    known = [
        example(i, t, "oos" if c in answered_oos else c)
        for i, (t, c) in enumerate(_rows("train"))
        if c not in unseen or c in answered_oos
    ]
    train = [e for e in known if split_of(e.prompt[-1]["content"], 0.2) == "train"]
    evals = [e for e in known if split_of(e.prompt[-1]["content"], 0.2) == "eval"]
    base = resolve("minilm-l6", store)
    t0 = time.perf_counter()
    run_dir = store / f"run-{scope_quantile}-{labelled}-{finetune}"
    settings = Training(scope_quantile=scope_quantile, finetune_encoder=finetune)
    result = train_classifier(base, train, run_dir, settings)
    train_s = time.perf_counter() - t0
    report = evaluate(
        result.merged, "oos", "eval", evals, "exact_match", 0.97, 50, None, None, 0.5, 0.5
    )
    # The gate as it was before certify rows: one set chooses and certifies.
    one_set = dataclasses.replace(report, certify_share=None)
    test = [example(i, t, c) for i, (t, c) in enumerate(_rows("test"))]
    t0 = time.perf_counter()
    answers = generate(result.merged, [e.prompt for e in test])
    answer_ms = (time.perf_counter() - t0) * 1000 / len(test)
    inside = [(e, a) for e, a in zip(test, answers, strict=True) if e.answer not in unseen]
    outside = [(e, a) for e, a in zip(test, answers, strict=True) if e.answer in unseen]
    out_of_scope = sum(conf == 0.0 for _, (_, conf) in outside)
    cert = report.certified()
    return {
        "scope_quantile": scope_quantile,
        "finetune_encoder": finetune,
        "intents_trained": len(intents) - held_out,
        "intents_held_out": sorted(unseen),
        "intents_answered_oos_in_training": sorted(answered_oos),
        "train_examples": len(train),
        "eval_examples": len(evals),
        "train_seconds": round(train_s, 1),
        "gate_passed": report.passed(),
        **served_at(report, inside, outside, answered_oos),
        "certify_rows": cert.examples if cert else 0,
        "certified_coverage": round(cert.coverage, 4) if cert else None,
        "certified_agreement": round(cert.agreement, 4) if cert else None,
        "certified_bounds": [round(cert.lower, 4), round(cert.upper, 4)] if cert else None,
        "out_of_scope_confidence_0_share": round(out_of_scope / len(outside), 4),
        "answer_ms_per_query": round(answer_ms, 2),
        "one_eval_set": {"gate_passed": one_set.passed()}
        | served_at(one_set, inside, outside, answered_oos),
    }


def served_at(
    report: Any, inside: list[Any], outside: list[Any], answered_oos: set[str]
) -> dict[str, Any]:
    """What the test split gets at the threshold `report` chose."""
    threshold = report.serving_threshold()
    chosen = report.selection()

    def served(pairs: list[Any]) -> list[Any]:
        return [(e, a) for e, a in pairs if threshold is not None and a[1] >= threshold]

    kept_in = served(inside)
    agree = sum(a[0] == e.answer for e, a in kept_in)
    kept_out = served(outside)
    by_oos = [(e, a) for e, a in outside if e.answer in answered_oos]
    never = [(e, a) for e, a in outside if e.answer not in answered_oos]

    def escalated(pairs: list[Any]) -> float | None:
        return round(1 - len(served(pairs)) / len(pairs), 4) if pairs else None

    return {
        "threshold": threshold,
        "eval_coverage": chosen.coverage if chosen else 0.0,
        "eval_kept_agreement": chosen.agreement if chosen else 0.0,
        "test_in_scope": len(inside),
        "test_out_of_scope": len(outside),
        "in_scope_served_share": round(len(kept_in) / len(inside), 4),
        "in_scope_served_agreement": round(agree / max(1, len(kept_in)), 4),
        "in_scope_served_agreement_wilson_lower": round(_wilson_lower(agree, len(kept_in)), 4),
        "out_of_scope_escalated_share": round(1 - len(kept_out) / len(outside), 4),
        "answered_oos_intents_escalated_share": escalated(by_oos),
        "never_seen_intents_escalated_share": escalated(never),
        # A held-out intent's query that is served is always wrong: its label was never
        # learned. This is what users of the route received from the student.
        "all_served_agreement": round(agree / max(1, len(kept_in) + len(kept_out)), 4),
    }


def compare_distances(held_out: int, seed: int, store: Path) -> dict[str, Any]:
    """The scope gate's distance against a Mahalanobis distance to the label means (shared
    Ledoit-Wolf covariance) on the same frozen MiniLM features: at the threshold where 5%
    and 1% of held-out in-scope queries (the eval split) are flagged, the share of the
    unseen intents' test queries each flags."""
    import numpy as np
    import torch
    from sklearn.covariance import LedoitWolf

    from distiller.bases import resolve
    from distiller.datasets import split_of
    from students.classifier import Encoder, Scope

    intents = sorted({c for _, c in _rows("train")})
    unseen = set(random.Random(seed).sample(intents, held_out))
    known = [(t, c) for t, c in _rows("train") if c not in unseen]
    train = [(t, c) for t, c in known if split_of(t, 0.2) == "train"]
    evals = [t for t, c in known if split_of(t, 0.2) == "eval"]
    outside = [t for t, c in _rows("test") if c in unseen]
    encoder = Encoder(resolve("minilm-l6", store))
    fit = encoder.embed([t for t, _ in train])
    labels = sorted({c for _, c in train})
    y = torch.tensor([labels.index(c) for _, c in train])
    held, far = encoder.embed(evals), encoder.embed(outside)
    means = torch.stack([fit[y == k].mean(0) for k in range(len(labels))])
    precision = torch.from_numpy(
        np.asarray(LedoitWolf().fit((fit - means[y]).double().numpy()).precision_)
    ).float()

    def mahalanobis(x: Any) -> Any:
        xp = x @ precision
        own = (xp * x).sum(-1, keepdim=True)
        return (own - 2 * xp @ means.T + ((means @ precision) * means).sum(-1)).min(-1).values

    nearest = Scope(fit.half(), 0.0).distances
    out: dict[str, Any] = {}
    for name, score in (
        ("nearest_example_cosine", nearest),
        ("mahalanobis_label_means", mahalanobis),
    ):
        for q in (0.95, 0.99):
            cut = float(torch.quantile(score(held), q))
            out[f"{name}@{q}"] = round(float((score(far) > cut).float().mean()), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--held-out", type=int, default=17)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--store", type=Path, default=Path("/tmp/flywheel-bench-oos"))
    parser.add_argument(
        "--quantiles", default="none,0.95,0.99", help="scope gates compared (no `oos` traffic)"
    )
    parser.add_argument(
        "--labelled",
        default="12,17",
        help="runs (scope gate 0.95) where this many held-out intents were answered `oos`",
    )
    parser.add_argument(
        "--finetune", action="store_true", help="the `--labelled` runs fine-tune the encoder"
    )
    parser.add_argument("--no-compare", action="store_true", help="skip the distance comparison")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.store.mkdir(parents=True, exist_ok=True)
    runs = [
        run(args.held_out, 0, args.seed, args.store, None if q == "none" else float(q))
        for q in args.quantiles.split(",")
        if q
    ] + [
        run(args.held_out, int(k), args.seed, args.store, 0.95, args.finetune)
        for k in args.labelled.split(",")
        if k
    ]
    out = {
        "benchmark": "out_of_scope",
        "gate": {"threshold": 0.97, "min_coverage": 0.5},
        "runs": runs,
        "unseen_flagged_by_distance": None
        if args.no_compare
        else compare_distances(args.held_out, args.seed, args.store),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
