"""What submitting a training through each backend costs, for the tiny student on CPU.

The same job (a `local:tiny` generator student on 300 Banking77 queries, answers = intent
names, one epoch, then evaluation on 60) runs through:
- `inline`: `distiller.jobs.run_job` in this process (the floor: no submission at all),
- `local`: a spawned worker process (the default backend; warm = spawned ahead, as the
  distiller keeps one),
- `ray`: a Ray task on a local cluster started here (`ray start --head`, 2 CPUs).
Reported per backend: wall seconds per job (median of `--repeats`), the job's own training
seconds, and the overhead (wall minus the inline wall).

    pip install -e ".[ray]"
    python load_tests/bench_training_backends.py --out load_tests/results/training_backends.json

On a GPU machine (`--device cuda` is implied by torch seeing one) the same script gives the
LoRA SFT throughput through `local` and `ray` for the bases named with `--base`.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from contracts.backends import RayBackend as RayConfig
from contracts.model_config import ModelConfig
from contracts.policy import Gate
from contracts.training import Resources, Training
from distiller.backends.local import InlineBackend, LocalBackend
from distiller.backends.ray_backend import RayBackend
from distiller.examples import Example
from distiller.jobs import TrainJob, write_job
from distiller.model_store import ModelStore

BANKING77 = Path(__file__).resolve().parents[1] / "tests" / "data" / "banking77"


def examples(n: int) -> list[Example]:
    with (BANKING77 / "train.csv").open() as f:
        rows = list(csv.DictReader(f))[:n]
    return [
        Example(str(uuid.uuid4()), [{"role": "user", "content": r["text"]}], r["category"])
        for r in rows
    ]


def job(base: str, data: list[Example], resources: Resources) -> TrainJob:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    texts = [m["content"] for e in data for m in e.prompt] + [e.answer for e in data]
    return TrainJob(
        run_id,
        "bench",
        "tiny",
        f"bench/tiny/{run_id}",
        resources,
        "generator",
        base,
        texts,
        data[:-60],
        data[-60:],
        Training(epochs=1, pretrain_steps=50, early_stopping_patience=0, max_length=64),
        "bench-eval",
        Gate(metric="exact_match", threshold=0.0, min_examples=1),
        ModelConfig(model="openai/unused", api_base="http://127.0.0.1:9/v1"),
    )


def measure(backend: Any, store: Path, base: str, repeats: int) -> dict[str, Any]:
    walls, trains = [], []
    data = examples(360)
    for _ in range(repeats):
        j = job(base, data, Resources(cpus=1))
        write_job(j, ModelStore(store))
        t0 = time.perf_counter()
        result, _ = backend.run(j, ModelStore(store), lambda: None)
        walls.append(time.perf_counter() - t0)
        trains.append(result.seconds)
    return {
        "wall_s_median": round(statistics.median(walls), 2),
        "wall_s": [round(w, 2) for w in walls],
        "train_s_median": round(statistics.median(trains), 2),
        "device": result.device,
        "tokens_per_s": round(result.tokens_per_s, 1),
    }


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", default="local:tiny")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    out: dict[str, Any] = {"base": args.base, "repeats": args.repeats}
    out["inline"] = measure(InlineBackend(), store, args.base, args.repeats)
    local = LocalBackend()
    local.start()
    time.sleep(5)  # the warm worker finishes its imports, as the distiller's would
    out["local"] = measure(local, store, args.base, args.repeats)
    local.close()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray_args = ["--head", "--node-ip-address", "127.0.0.1", "--port", "6391", "--num-cpus", "2"]
    ray_args += ["--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp]
    subprocess.run(
        ["ray", "start", *ray_args],
        check=True,
        capture_output=True,
    )
    try:
        ray_backend = RayBackend(RayConfig(address="127.0.0.1:6391", poll_s=0.1))
        out["ray"] = measure(ray_backend, store, args.base, args.repeats)
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True)
    floor = out["inline"]["wall_s_median"]
    for name in ("local", "ray"):
        out[name]["overhead_s_vs_inline"] = round(out[name]["wall_s_median"] - floor, 2)
    return out


if __name__ == "__main__":
    import sys

    result = main()
    text = json.dumps(result, indent=2)
    print(text)
    out_arg = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
    if out_arg:
        Path(out_arg).write_text(text + "\n")
