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
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from contracts.openai_shapes import role_text
from contracts.policy import PolicySet, Route
from contracts.pricing import price_table
from distiller.backends import JobFailed
from distiller.bases import BaseUnavailable
from distiller.cache_audits import advance_semantic
from distiller.certification import (
    Certification,
    artifact_digest,
    data_digest,
    flag_stale_certifications,
    judge_of,
)
from distiller.classifier import NotAClosedSet
from distiller.curation import curate
from distiller.datasets import DatasetVersion, build_dataset, reload_dataset
from distiller.eval_reports import store_report
from distiller.jobs import TrainJob
from distiller.leases import Lease
from distiller.promotion import advance, after_evaluation, current
from distiller.publishing import PublishError, publish
from distiller.recertify import recertify_stale
from distiller.runs import TrainingContext, abandon_stale, run_with_retries
from distiller.structure_inference import NotStructured
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


def _requested(store: Store, route: str) -> bool:
    """An operator asked for a run (admin API, `flywheel distill --url --force`) after the
    route's latest run started."""
    rows = store.query_rows(
        "SELECT (SELECT max(requested_at) FROM distill_requests WHERE route = {r:String}),"
        " (SELECT max(created_at) FROM training_runs WHERE route = {r:String})",
        {"r": route},
    )
    asked, ran = rows[0] if rows else (None, None)
    epoch = datetime(1970, 1, 1)
    return bool(asked) and (asked or epoch) > (ran or epoch)


_UNFINISHED = """
SELECT dataset_id, countIf(status = 'succeeded') AS succeeded,
       countIf(status = 'failed') AS failed, countIf(status = 'running') AS running
FROM (
    SELECT run_id, argMax(training_runs.dataset_id, updated_at) AS dataset_id,
           argMax(training_runs.status, updated_at) AS status
    FROM training_runs WHERE route = {r:String} GROUP BY run_id
)
WHERE dataset_id = (SELECT argMax(dataset_id, created_at) FROM datasets WHERE route = {r:String})
GROUP BY dataset_id
"""


def _unfinished_dataset(store: Store, route: str, limit: int) -> str | None:
    """The route's latest dataset when its training died (no run succeeded or is running,
    fewer than `limit` failed): it is trained again without waiting for new traffic."""
    rows = store.query_dicts(_UNFINISHED, {"r": route})
    if not rows:
        return None
    r = rows[0]
    if r["succeeded"] or r["running"] or not r["failed"] or r["failed"] >= limit:
        return None
    return str(r["dataset_id"])


def _context(store: Store, model_dir: Path, ctx: TrainingContext | None) -> TrainingContext:
    if ctx is not None:
        return ctx
    from contracts.backends import Backend as BackendConfig
    from distiller.backends.local import InlineBackend

    return TrainingContext(store, InlineBackend(), BackendConfig(retries=0), model_dir)


def distill_route(
    store: Store,
    route: Route,
    policies: PolicySet,
    model_dir: Path,
    force: bool = False,
    ctx: TrainingContext | None = None,
) -> dict[str, Any]:
    """One pass for one workload. Jobs run where `ctx.backend` says (inline when no context
    is given: tests and scripts), under the route's lease when `ctx.leases` is set."""
    ctx = _context(store, model_dir, ctx)
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
    if stale := flag_stale_certifications(store, route, policies):
        summary["certification_stale"] = stale
        if route.gate.recertify:
            summary["recertified"] = recertify_stale(store, route, policies)
    force = force or _requested(store, route.name)
    retry = (
        None
        if force
        else _unfinished_dataset(
            store, route.name, (ctx.config.retries + 1) * 3 * len(route.candidates)
        )
    )
    if not force and retry is None and new < needed:
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
    lease = None
    if ctx.leases is not None:
        lease = ctx.leases.acquire(f"train:{route.name}", ctx.holder, ctx.config.lease_ttl_s)
        if lease is None:
            summary["skipped"] = "another distiller holds this route's training lease"
            return summary
    try:
        if retry is not None:
            ds = reload_dataset(store, curated, retry)
            summary["retrying_dataset"] = retry
        else:
            ds = build_dataset(store, curated, settings.eval_fraction)
        _train_candidates(ctx, route, policies, ds, summary, lease)
    finally:
        if lease is not None and ctx.leases is not None:
            ctx.leases.release(lease)
    summary["changes"] = advance(store, route, prices)
    return summary


def _train_candidates(
    ctx: TrainingContext,
    route: Route,
    policies: PolicySet,
    ds: DatasetVersion,
    summary: dict[str, Any],
    lease: Lease | None,
) -> None:
    store, settings = ctx.store, route.training
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
        job = TrainJob(
            run_id,
            route.name,
            cand.name,
            f"{route.name}/{cand.name}/{run_id}",
            settings.resources,
            cand.kind,
            cand.resolved_base,
            texts,
            ds.train,
            ds.eval,
            settings,
            ds.eval_set_id,
            route.gate,
            policies.models[route.teacher],
            policies.models[cand.model],
            cand.examples,
            ds.dataset_id,
        )
        try:
            job, result, report = run_with_retries(ctx, job, ds.dataset_id, lease)
        except (NotAClosedSet, NotStructured, BaseUnavailable) as e:
            # Not a training failure to retry: the candidate cannot serve this route as set.
            reason = f"cannot train: {e}"
            state = after_evaluation(
                store, route, cand.name, run_id, ds.dataset_id, False, {"error": str(e)}
            )
            summary["runs"].append({"candidate": cand.name, "state": state, "error": reason})
            continue
        except JobFailed as e:
            # Every attempt died; the dataset is trained again on a later pass.
            summary["runs"].append({"candidate": cand.name, "failed": e.reason})
            continue
        location = ctx.models.location(job.rel_dir)
        run_id = job.run_id
        teacher = policies.models[route.teacher].model
        cert = Certification(
            teacher,
            judge_of(route, teacher),
            ds.eval_set_id,
            data_digest(ds.eval),
            artifact_digest(result.merged),
        )
        store_report(store, report, route.name, cand.name, route.gate.confidence, cert.as_dict())
        evidence = {
            "run_id": run_id,
            "eval_set": ds.eval_set_id,
            "examples": report.n,
            "agreement": report.agreement,
            "wilson_lower": report.lower_bound(route.gate.confidence),
            "threshold": route.gate.threshold,
            "min_examples": route.gate.min_examples,
            "certified_on": cert.as_dict(),
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
            fresh = report.certified(route.gate.confidence) if report.split else None
            if fresh is not None:  # the certify rows: what the threshold keeps of fresh rows
                evidence["certified"] = fresh.as_dict()
            if why := report.contradicted(route.gate.confidence):
                evidence["gate_failed"] = why
        passed = report.passed(route.gate.confidence)
        if cand.kind == "few_shot":
            evidence.update(
                retriever=cand.retriever, k=cand.examples, index=ctx.models.artifact(result.merged)
            )
        elif passed:
            # A student may serve only once its endpoint has it loaded.
            try:
                evidence["published"] = publish(policies.models[cand.model], location)
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
                "artifact": ctx.models.artifact(result.merged),
            }
        )


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


def _semantic_pass(store: Store, policies: PolicySet, workload: str | None) -> list[dict[str, Any]]:
    """Roll back the semantic caches whose audited hits stopped agreeing with the teacher."""
    out: list[dict[str, Any]] = []
    for route in policies.routes:
        if route.cache is None or route.cache.semantic is None:
            continue
        if workload and route.name != workload:
            continue
        try:
            changes = advance_semantic(store, route)
        except Exception as e:  # one route's failure spares the others
            log.exception("semantic cache of %s not advanced", route.name)
            changes = [f"error: {type(e).__name__}: {e}"]
        if changes:
            out.append({"route": route.name, "semantic_cache": changes})
    return out


def distill_pass(
    ctx: TrainingContext,
    policies: PolicySet,
    workload: str | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """One pass: runs abandoned by a dead distiller are marked failed, then every route with
    candidates (or one) is distilled, up to `backend.concurrency` routes training at once."""
    abandon_stale(ctx)
    routes = [r for r in policies.routes if r.candidates and (not workload or r.name == workload)]

    def one(route: Route) -> dict[str, Any]:
        try:
            return distill_route(ctx.store, route, policies, ctx.model_dir, force, ctx)
        except Exception as e:  # one route's failure (store down, bad data) spares the others
            log.exception("distilling %s failed", route.name)
            return {"route": route.name, "error": f"{type(e).__name__}: {e}"}

    with ThreadPoolExecutor(max(1, ctx.config.concurrency), "distill") as pool:
        out = list(pool.map(one, routes))
    out += _semantic_pass(ctx.store, policies, workload)
    for item in out:
        log.info("%s", orjson.dumps(item, default=str).decode())
    if not workload:
        out += guard_pass(ctx.store, policies, ctx.model_dir, force=force)
    return out


def run(
    ctx: TrainingContext,
    policies: PolicySet,
    workload: str | None = None,
    once: bool = False,
    force: bool = False,
    interval_s: float = 30.0,
) -> list[dict[str, Any]]:
    """Distill every route with candidates (or one), once or forever."""
    while True:
        out = distill_pass(ctx, policies, workload, force)
        if once or ctx.stop.wait(interval_s):
            return out
