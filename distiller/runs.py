"""A training run's life in `training_runs`: submitted, running (with progress), then
succeeded or failed with its reason; retried with backoff when its job died.

Each state change and each progress report is a row (the latest row of a `run_id`, by
`updated_at`, is its state); every attempt is its own run id. While a job runs, the
distiller reads the job's `progress.json` from the model store every
`backend.progress_every_s` and writes it as a `running` row, and renews the route's lease.

Invariant: a run's last row is `succeeded` or `failed`, or a `running` row younger than the
lease TTL: `abandon_stale` turns a `running` run nobody reports on (its distiller died) into
a failed one, so no run is left running forever.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from contracts.backends import Backend as BackendConfig
from distiller import progress
from distiller.backends import Backend, JobFailed
from distiller.evaluation import EvalReport
from distiller.jobs import TrainJob, write_job
from distiller.leases import Lease, Leases
from distiller.model_store import ModelStore
from distiller.training import TrainResult
from store import Store

log = logging.getLogger("flywheel.runs")

RunStatus = Literal["running", "succeeded", "failed"]

COLUMNS = [
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
    "status",
    "attempt",
    "backend",
    "error",
    "stage",
    "step",
    "total_steps",
    "loss",
    "holder",
    "updated_at",
]


@dataclass
class TrainingContext:
    """What the runs of one pass share: the store, where jobs run, who we are."""

    store: Store
    backend: Backend
    config: BackendConfig
    model_dir: Path
    leases: Leases | None = None
    store_url: str | None = None  # an fsspec URL model store; default: model_dir
    holder: str = field(default_factory=lambda: f"distiller-{uuid.uuid4().hex[:8]}")
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def models(self) -> ModelStore:
        return ModelStore(self.store_url or self.model_dir)


@dataclass
class Attempt:
    job: TrainJob
    dataset_id: str
    attempt: int
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def record(
    ctx: TrainingContext,
    at: Attempt,
    status: RunStatus,
    *,
    result: TrainResult | None = None,
    report: dict[str, Any] | None = None,
    error: str = "",
) -> None:
    job, report = at.job, report or {}
    elapsed = (datetime.now(UTC) - at.created_at).total_seconds()
    row = {
        "run_id": job.run_id,
        "route": job.route,
        "candidate": job.candidate,
        "dataset_id": at.dataset_id,
        "base": job.base_spec,
        "params": job.settings.model_dump_json(),
        "losses": result.losses if result else [],
        "steps": result.steps if result else int(report.get("step") or 0),
        "seconds": result.seconds if result else elapsed,
        "tokens": result.tokens if result else 0,
        "tokens_per_s": result.tokens_per_s if result else float(report.get("tokens_per_s") or 0),
        "device": result.device if result else "",
        "artifact_path": ctx.models.artifact(result.merged) if result else "",
        "created_at": at.created_at,
        "status": status,
        "attempt": at.attempt,
        "backend": ctx.backend.name,
        "error": error,
        "stage": str(report.get("stage") or ("done" if result else "")),
        "step": result.steps if result else int(report.get("step") or 0),
        "total_steps": int(report.get("total") or (result.steps if result else 0)),
        "loss": (result.losses[-1] if result and result.losses else report.get("loss")),
        "holder": ctx.holder,
        "updated_at": datetime.now(UTC),
    }
    ctx.store.insert_rows("training_runs", [list(row.values())], COLUMNS)


def _ticker(ctx: TrainingContext, at: Attempt, lease: Lease | None) -> Callable[[], None]:
    """Called while the job runs: a progress row and a lease renewal every few seconds."""
    last = [datetime.now(UTC)]
    models = ctx.models

    def tick() -> None:
        now = datetime.now(UTC)
        if now - last[0] < timedelta(seconds=ctx.config.progress_every_s):
            return
        last[0] = now
        raw = models.read_bytes(f"{at.job.rel_dir}/{progress.FILE}")
        report = json.loads(raw) if raw else {}
        try:
            record(ctx, at, "running", report=report)
            if lease is not None and ctx.leases is not None:
                ctx.leases.renew(lease, ctx.config.lease_ttl_s)
        except Exception as e:  # a store hiccup must not kill the job being watched
            log.warning("progress of %s not recorded: %s", at.job.run_id, e)

    return tick


def run_with_retries(
    ctx: TrainingContext,
    first: TrainJob,
    dataset_id: str,
    lease: Lease | None = None,
) -> tuple[TrainJob, TrainResult, EvalReport]:
    """Run the job; when it dies, record the failure and retry (a new run id each time)
    after `retry_backoff_s * 2**(n-1)`, up to `retries` times. Raises the last `JobFailed`,
    or the job's own `NotAClosedSet` / `BaseUnavailable` at once."""
    attempt = 1
    job = first
    while True:
        at = Attempt(job, dataset_id, attempt)
        write_job(job, ctx.models)
        record(ctx, at, "running", report={"stage": "submitted"})
        try:
            result, report = ctx.backend.run(job, ctx.models, _ticker(ctx, at, lease))
        except JobFailed as e:
            record(ctx, at, "failed", error=e.reason)
            log.warning("run %s (attempt %d) failed: %s", job.run_id, attempt, e.reason)
            if attempt > ctx.config.retries or ctx.stop.is_set():
                raise
            delay = ctx.config.retry_backoff_s * 2 ** (attempt - 1)
            if ctx.stop.wait(delay):
                raise
            attempt += 1
            run_id = f"{first.run_id}-r{attempt}"
            rel = str(Path(first.rel_dir).parent / run_id)
            job = replace(first, run_id=run_id, rel_dir=rel)
            continue
        except Exception as e:
            record(ctx, at, "failed", error=f"cannot train: {e}"[:500])
            raise
        record(ctx, at, "succeeded", result=result, report={"stage": "done"})
        return job, result, report


_STALE = """
SELECT run_id, argMax(status, updated_at) AS last_status, max(updated_at) AS last_at
FROM training_runs
GROUP BY run_id
HAVING last_status = 'running' AND last_at < {before:DateTime64(3)}
"""


def abandon_stale(ctx: TrainingContext) -> list[str]:
    """Mark failed every run whose last report is `running` and older than the lease TTL
    (its distiller or job died without a word). Returns their run ids."""
    before = datetime.now(UTC) - timedelta(seconds=ctx.config.lease_ttl_s)
    rows = ctx.store.query_dicts(_STALE, {"before": before.replace(tzinfo=None)})
    for r in rows:
        latest = ctx.store.query_dicts(
            "SELECT * FROM training_runs WHERE run_id = {r:String} "
            "ORDER BY updated_at DESC LIMIT 1",
            {"r": r["run_id"]},
        )[0]
        latest.update(
            status="failed",
            error=f"abandoned: no progress for {ctx.config.lease_ttl_s:.0f} s "
            f"(its distiller or job died)",
            updated_at=datetime.now(UTC),
        )
        ctx.store.insert_rows("training_runs", [[latest[c] for c in COLUMNS]], COLUMNS)
    return [str(r["run_id"]) for r in rows]
