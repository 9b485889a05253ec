"""The distiller's loop: for each workload, curate → dataset → train → evaluate → promote.

Training is triggered when a route has at least `training.min_new_examples` more curated
examples than its last dataset (or on demand: `flywheel distill --workload W --once`).
Each candidate slot is trained from its `base`: a hub id or local path (LoRA), or
`local:tiny` (a small base built from the workload's own traffic, fully fine-tuned). Rollout
states advance from shadow answers and audits on every pass.

Invariant: the worker never runs on the gateway's event loop: it is its own process
(`flywheel distill`) or a thread/subprocess of `flywheel serve`; it talks to the gateway only
through ClickHouse (datasets, runs, reports, candidate states, events).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from contracts.bases import CandidateKind
from contracts.model_config import ModelConfig
from contracts.openai_shapes import role_text
from contracts.policy import Gate, PolicySet, Route
from contracts.pricing import price_table
from contracts.training import Training
from distiller.base_model import build_tiny_base
from distiller.bases import BaseUnavailable
from distiller.bases import resolve as resolve_base
from distiller.classifier import NotAClosedSet, split_calibration, train_classifier
from distiller.curation import curate
from distiller.datasets import build_dataset
from distiller.evaluation import EvalReport, evaluate, store_report, teacher_judge
from distiller.examples import Example
from distiller.promotion import advance, after_evaluation, current
from distiller.publishing import PublishError, publish
from distiller.training import TrainResult, train
from store import Store

log = logging.getLogger("flywheel.distiller")


def _in_last_dataset(store: Store, route: str) -> set[str]:
    """The request ids of the route's latest dataset version."""
    rows = store.query_rows(
        "SELECT toString(request_id) FROM dataset_items WHERE dataset_id = ("
        " SELECT argMax(dataset_id, created_at) FROM datasets WHERE route = {r:String})",
        {"r": route},
    )
    return {str(r[0]) for r in rows}


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
) -> tuple[TrainResult, EvalReport]:
    """The heavy half of a run, with no store access: safe to run in a subprocess."""
    base = _base_for(base_spec, texts, dirs, settings)
    if kind == "classifier":
        result = train_classifier(base, train_set, dirs, settings)
    else:
        fit, dev = _dev_split(train_set, settings)
        result = train(base, fit, dirs, settings, dev)
    judge = teacher_judge(teacher) if gate.metric == "llm_judge" else None
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
    )
    return result, report


Runner = Callable[..., tuple[TrainResult, EvalReport]]


def _inline(
    fn: Callable[..., tuple[TrainResult, EvalReport]], *args: Any
) -> tuple[TrainResult, EvalReport]:
    return fn(*args)


def distill_route(
    store: Store,
    route: Route,
    policies: PolicySet,
    model_dir: Path,
    force: bool = False,
    runner: Runner = _inline,
) -> dict[str, Any]:
    """One pass for one workload. `runner` runs `train_and_evaluate` (inline, or in a
    subprocess when the caller shares its process with the gateway)."""
    settings = route.training
    curated = curate(store, route.name)
    # New = curated examples the last dataset did not hold (erasures cannot make it negative).
    known = _in_last_dataset(store, route.name)
    new = sum(1 for ex in curated.examples if ex.request_id not in known)
    needed = settings.min_new_examples
    summary: dict[str, Any] = {
        "route": route.name,
        "curated": len(curated.examples),
        "excluded": dict(curated.excluded),
        "new_examples": new,
    }
    prices = price_table(policies.models)
    if not route.candidates:
        summary["skipped"] = "route has no candidates"
        return summary
    if not force and new < needed:
        summary["skipped"] = f"{new} new examples < {needed}"
        summary["changes"] = advance(store, route, prices)
        return summary
    rolling = [
        f"{c.name} in {st.state}"
        for c in route.candidates
        if (st := current(store, route.name, c.name)) and st.state in ("shadow", "canary")
    ]
    if not force and rolling:
        # A run in shadow or canary is given the time to prove itself: retraining now would
        # restart its rollout (seen: a retrain kept a passing student in canary a minute).
        summary["skipped"] = f"rollout in progress: {', '.join(rolling)}"
        summary["changes"] = advance(store, route, prices)
        return summary
    ds = build_dataset(store, curated, settings.eval_fraction)
    summary.update(
        dataset_id=ds.dataset_id,
        train=len(ds.train),
        eval=len(ds.eval),
        eval_set=ds.eval_set_id,
        runs=[],
    )
    # A tiny base pretrains on the users' turns and the answers, and on each distinct system
    # prompt once (its tokenizer must cover it), not once per example.
    systems = {t for ex in ds.train for t in role_text(ex.prompt, ("system", "developer"))}
    texts = sorted(systems) + [
        t for ex in ds.train for t in (*role_text(ex.prompt, ("user",)), ex.answer)
    ]
    for cand in route.candidates:
        run_id = f"{route.name}-{cand.name}-{uuid.uuid4().hex[:8]}"
        dirs = model_dir / route.name / cand.name / run_id
        try:
            result, report = runner(
                train_and_evaluate,
                cand.kind,
                cand.resolved_base,
                texts,
                ds.train,
                ds.eval,
                dirs,
                settings,
                run_id,
                ds.eval_set_id,
                route.gate,
                policies.models[route.teacher],
            )
        except (NotAClosedSet, BaseUnavailable) as e:
            # Not a training failure to retry: the candidate cannot serve this route as set.
            reason = f"cannot train: {e}"
            state = after_evaluation(
                store, route, cand.name, run_id, ds.dataset_id, False, {"error": str(e)}
            )
            summary["runs"].append({"candidate": cand.name, "state": state, "error": reason})
            continue
        store.insert_rows(
            "training_runs",
            [
                [
                    run_id,
                    route.name,
                    cand.name,
                    ds.dataset_id,
                    cand.resolved_base,
                    settings.model_dump_json(),
                    result.losses,
                    result.steps,
                    result.seconds,
                    result.tokens,
                    result.tokens_per_s,
                    result.device,
                    str(result.merged),
                    datetime.now(UTC),
                ]
            ],
            [
                "run_id",
                "route",
                "candidate",
                "dataset_id",
                "base",
                "params",
                "losses",
                "steps",
                "seconds",
                "tokens",
                "tokens_per_s",
                "device",
                "artifact_path",
                "created_at",
            ],
        )
        store_report(store, report, route.name, cand.name, route.gate.confidence)
        evidence = {
            "run_id": run_id,
            "eval_set": ds.eval_set_id,
            "examples": report.n,
            "agreement": report.agreement,
            "wilson_lower": report.lower_bound(route.gate.confidence),
            "threshold": route.gate.threshold,
            "min_examples": route.gate.min_examples,
        }
        serving_threshold = report.serving_threshold(route.gate.confidence)
        if route.gate.min_coverage is not None:
            chosen = report.selection(route.gate.confidence)
            evidence.update(
                min_coverage=route.gate.min_coverage,
                coverage=chosen.coverage if chosen else 0.0,
                kept_agreement=chosen.agreement if chosen else 0.0,
                min_confidence=serving_threshold,
            )
        passed = report.passed(route.gate.confidence)
        if passed:
            # A student may serve only once its endpoint has it loaded.
            try:
                evidence["published"] = publish(policies.models[cand.model], dirs)
            except (PublishError, httpx.HTTPError) as e:
                evidence["publish_error"] = str(e)
        state = after_evaluation(
            store, route, cand.name, run_id, ds.dataset_id, passed, evidence, serving_threshold
        )
        summary["runs"].append(
            {
                **evidence,
                "candidate": cand.name,
                "state": state,
                "train_seconds": result.seconds,
                "tokens_per_s": result.tokens_per_s,
                "artifact": str(result.merged),
            }
        )
    summary["changes"] = advance(store, route, prices)
    return summary


def guard_pass(
    store: Store, policies: PolicySet, model_dir: Path, force: bool = False
) -> list[dict[str, Any]]:
    """Train or re-threshold the prompt-attack detectors the policies use (see
    `guard_training`); reports what it did. Seconds, on this thread."""
    from dataclasses import asdict

    from distiller.attack_corpora import ensure_fetched
    from distiller.guard_training import prompt_attack_rails, refresh

    if not prompt_attack_rails(policies):
        return []
    corpora = model_dir / "corpora"
    ensure_fetched(corpora)
    reports = refresh(store, policies, model_dir / "guards", corpora, force=force)
    return [{"guard": asdict(r)} for r in reports]


def run(
    store: Store,
    policies: PolicySet,
    model_dir: Path,
    workload: str | None = None,
    once: bool = False,
    force: bool = False,
    interval_s: float = 30.0,
) -> list[dict[str, Any]]:
    """Distill every route with candidates (or one), once or forever."""
    while True:
        out = []
        for route in policies.routes:
            if workload and route.name != workload:
                continue
            if not route.candidates:
                continue
            out.append(distill_route(store, route, policies, model_dir, force=force))
            log.info("%s", orjson.dumps(out[-1]).decode())
        if not workload:
            out += guard_pass(store, policies, model_dir, force=force)
        if once:
            return out
        time.sleep(interval_s)
