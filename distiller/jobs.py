"""One training job: train a candidate on a dataset and evaluate it, with no store access.

The same function runs on every backend (`distiller/backends/`): in a spawned process here,
as a Ray task, or as `python -m distiller.jobs <run dir>` in a Kubernetes Job's pod. What
goes in and out travels through the model store, which every node reaches:

    <model store>/<route>/<candidate>/<run_id>/job.pkl      the arguments (written first)
    <model store>/<route>/<candidate>/<run_id>/progress.json step, loss, tokens/s (while it runs)
    <model store>/<route>/<candidate>/<run_id>/result.pkl   TrainResult and EvalReport

Paths inside are relative to the model store, so a pod that mounts it elsewhere (`/models`)
runs the same job (`--model-store`). With a URL store (`distiller/model_store.py`) the job
runs in a scratch folder and moves files through fsspec.

Invariant: `result.pkl` is written whole (aside, then renamed) after the artifacts it names
are saved: a job whose result is there finished.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from contracts.bases import CandidateKind, Retriever
from contracts.model_config import ModelConfig
from contracts.policy import Gate
from contracts.training import Resources, Training
from distiller import progress
from distiller.base_model import build_tiny_base
from distiller.bases import resolve as resolve_base
from distiller.classifier import split_calibration, train_classifier
from distiller.evaluation import EvalReport, evaluate, teacher_judge
from distiller.examples import Example
from distiller.few_shot import build_and_evaluate
from distiller.model_store import ModelStore
from distiller.structured import train_structured
from distiller.training import TrainResult, train

log = logging.getLogger("flywheel.jobs")

JOB, RESULT = "job.pkl", "result.pkl"


@dataclass
class TrainJob:
    """What a backend submits: where the run lives, what it needs, and its arguments."""

    run_id: str
    route: str
    candidate: str
    rel_dir: str  # the run's folder, relative to the model store
    resources: Resources
    kind: CandidateKind
    base_spec: str
    texts: list[str]
    train_set: list[Example]
    eval_set: list[Example]
    settings: Training
    eval_set_id: str
    gate: Gate
    teacher: ModelConfig
    # few_shot: the model prompted with the examples, how many, and the dataset indexed.
    model: ModelConfig | None = None
    examples: int = 8
    dataset_id: str = ""


def _base_for(base: str, texts: list[str], dirs: Path, settings: Training) -> str:
    """A loadable base: `local:tiny` built for this run, named bases from the model store
    (`dirs` is `<store>/<route>/<candidate>/<run>`), anything else as given."""
    if base in ("", "local:tiny"):
        return str(build_tiny_base(texts, dirs / "base", pretrain_steps=settings.pretrain_steps))
    return resolve_base(base, dirs.parents[2], lambda line: log.info("%s", line))


def _dev_split(
    train_set: list[Example], settings: Training
) -> tuple[list[Example], list[Example] | None]:
    """Examples held out of a generator's training for early stopping: only when there are
    enough to spare (200+) and patience is on."""
    if settings.early_stopping_patience == 0 or len(train_set) < 200:
        return train_set, None
    fit, dev = split_calibration(train_set, settings.calibration_fraction)
    return (fit, dev) if dev else (train_set, None)


def train_and_evaluate(
    kind: CandidateKind,
    base_spec: str,
    texts: list[str],
    train_set: list[Example],
    eval_set: list[Example],
    dirs: Path,
    settings: Training,
    run_id: str,
    eval_set_id: str,
    gate: Gate,
    teacher: ModelConfig,
    model: ModelConfig | None = None,
    examples: int = 8,
    dataset_id: str = "",
) -> tuple[TrainResult, EvalReport]:
    """The heavy half of a run, with no store access: safe to run anywhere."""
    judge = teacher_judge(teacher) if gate.metric == "llm_judge" else None
    if kind == "few_shot":
        if model is None:
            raise ValueError("a few_shot job needs the candidate's model")
        retriever: Retriever = "ngram" if base_spec == "ngram" else "minilm-l6"
        encoder = "" if retriever == "ngram" else _base_for(base_spec, texts, dirs, settings)
        return build_and_evaluate(
            retriever,
            examples,
            encoder,
            model,
            train_set,
            eval_set,
            dirs,
            run_id,
            eval_set_id,
            dataset_id,
            gate,
            judge,
        )
    base = _base_for(base_spec, texts, dirs, settings)
    if kind == "classifier":
        result = train_classifier(base, train_set, dirs, settings)
    elif kind == "structured":
        result = train_structured(base, train_set, dirs, settings)
    else:
        fit, dev = _dev_split(train_set, settings)
        result = train(base, fit, dirs, settings, dev)
    report = evaluate(
        result.merged,
        run_id,
        eval_set_id,
        eval_set,
        gate.metric,
        gate.threshold,
        gate.min_examples,
        gate.fields,
        judge,
        gate.min_coverage,
        gate.certify_share,
    )
    return result, report


def write_job(job: TrainJob, store: ModelStore) -> None:
    store.write_bytes(f"{job.rel_dir}/{JOB}", pickle.dumps(job))


def _push_progress(store: ModelStore, run_dir: Path, rel: str, stop: threading.Event) -> None:
    """For a URL store: the local progress report, copied up every 2 s while the job runs."""
    last = b""
    while not stop.wait(2.0):
        data = (run_dir / progress.FILE).read_bytes() if (run_dir / progress.FILE).exists() else b""
        if data and data != last:
            store.write_bytes(f"{rel}/{progress.FILE}", data)
            last = data


def run_job(model_store: str, rel_dir: str) -> None:
    """The job itself, wherever it runs: read the arguments, train, evaluate, write the
    result. Paths in the result are relative to the model store."""
    store = ModelStore(model_store)
    data = store.read_bytes(f"{rel_dir}/{JOB}")
    if data is None:
        raise FileNotFoundError(f"no {JOB} at {store.location(rel_dir)}")
    job: TrainJob = pickle.loads(data)
    root = Path(tempfile.mkdtemp(prefix="flywheel-job-")) if store.remote else Path(model_store)
    run_dir = root / rel_dir
    stop = threading.Event()
    if store.remote:
        run_dir.mkdir(parents=True, exist_ok=True)
        threading.Thread(
            target=_push_progress, args=(store, run_dir, rel_dir, stop), daemon=True
        ).start()
    try:
        result, report = train_and_evaluate(
            job.kind,
            job.base_spec,
            job.texts,
            job.train_set,
            job.eval_set,
            run_dir,
            job.settings,
            job.run_id,
            job.eval_set_id,
            job.gate,
            job.teacher,
            job.model,
            job.examples,
            job.dataset_id,
        )
    finally:
        stop.set()
    if store.remote:
        store.upload(run_dir, rel_dir)
    relative = replace(
        result, out_dir=result.out_dir.relative_to(root), merged=result.merged.relative_to(root)
    )
    store.write_bytes(f"{rel_dir}/{RESULT}", pickle.dumps((relative, report)))
    if store.remote:
        shutil.rmtree(root, ignore_errors=True)


def read_result(store: ModelStore, rel_dir: str) -> tuple[TrainResult, EvalReport] | None:
    """The finished job's result, or None. Paths are local ones for a directory store, and
    relative to the store for a URL store (`ModelStore.artifact` gives their URL)."""
    data = store.read_bytes(f"{rel_dir}/{RESULT}")
    if data is None:
        return None
    result, report = pickle.loads(data)
    assert isinstance(result, TrainResult) and isinstance(report, EvalReport)
    if store.remote:
        return result, report
    root = Path(store.root)
    return replace(result, out_dir=root / result.out_dir, merged=root / result.merged), report


def main(argv: list[str] | None = None) -> int:
    """`python -m distiller.jobs --model-store /models <route>/<candidate>/<run_id>`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model-store", required=True)
    parser.add_argument("rel_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_job(args.model_store, args.rel_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
