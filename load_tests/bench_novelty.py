"""What the novelty check (`escalation.max_prompt_distance`) costs a request: the distance
of a Banking77 test query to the nearest of the 10,003 training queries, as the gateway
computes it (`PromptIndex.distance`: the query hashed directly, scored on its own columns),
next to the plain path (sklearn's `transform`, then the whole sparse product), with the
largest difference between their distances.

    python load_tests/bench_novelty.py --out load_tests/results/novelty.json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

from contracts.prompt_index import PromptIndex


def _texts(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


def _per_call_ms(fn: Any, queries: list[str]) -> dict[str, float]:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1]}


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "tests" / "data" / "banking77",
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    train, test = _texts(args.data / "train.csv"), _texts(args.data / "test.csv")
    queries = test[: args.queries]
    t0 = time.perf_counter()
    index = PromptIndex.build(train)
    build_s = time.perf_counter() - t0
    vectorizer = PromptIndex._vectorizer()

    def plain(q: str) -> float:
        return 1.0 - float((index.matrix @ vectorizer.transform([q]).T).toarray().max())

    worst = max(abs(index.distance(q) - plain(q)) for q in queries)
    out = {
        "training_prompts": len(train),
        "queries": len(queries),
        "index_build_s": round(build_s, 2),
        "gateway_distance": _per_call_ms(index.distance, queries),
        "sklearn_transform_and_product": _per_call_ms(plain, queries),
        "largest_distance_difference": worst,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
