"""Training at scale without a cluster: leases (ClickHouse and a real Redis) that let one
distiller train a route; runs a dead distiller left `running` turned failed and retrained
on their dataset; the admin API that asks a running gateway's distiller for a pass.

The Ray backend, on a real local Ray cluster, is in `test_ray_training.py`; the Kubernetes
backend in `test_kubernetes_backend.py`.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from contracts.backends import Backend as BackendConfig
from contracts.model_config import ModelConfig
from distiller.backends import JobFailed
from distiller.backends.local import InlineBackend, LocalBackend
from distiller.jobs import TrainJob
from distiller.leases import RedisLeases, StoreLeases
from distiller.model_store import ModelStore
from distiller.runs import COLUMNS, TrainingContext, abandon_stale, run_with_retries
from tests.support.dashboard_data import api_get
from tests.support.gateway import ADMIN_KEY, APP_KEY, RunningGateway
from tests.support.intents import generate
from tests.support.redis_server import running_redis
from tests.support.training_jobs import intent_job


def _claims(leases: StoreLeases | RedisLeases, name: str, n: int) -> list[bool]:
    with ThreadPoolExecutor(n) as pool:
        got = list(pool.map(lambda i: leases.acquire(name, f"d{i}", 30), range(n)))
    return [g is not None for g in got]


def test_store_leases_let_one_distiller_train_a_route(gateway: RunningGateway) -> None:
    leases = StoreLeases(gateway.state.store, settle_s=0.5)
    name = f"train:lease-{uuid.uuid4().hex[:6]}"
    assert sum(_claims(leases, name, 4)) == 1, "concurrent claimants agree on one winner"
    holder = leases.holder(name)
    assert holder is not None and leases.acquire(name, "late", 30) is None
    short = f"train:short-{uuid.uuid4().hex[:6]}"
    leases = StoreLeases(gateway.state.store, settle_s=0.1)
    lease = leases.acquire(short, "a", 0.6)
    assert lease is not None
    import time

    time.sleep(0.8)
    taken = leases.acquire(short, "b", 30)
    assert taken is not None, "a lapsed lease is taken over"
    assert not leases.renew(lease, 30), "its old holder can no longer renew it"
    leases.release(taken)
    assert leases.acquire(short, "c", 30) is not None


@pytest.mark.slow
def test_redis_leases(tmp_path: Path) -> None:
    with running_redis(tmp_path) as url:
        leases = RedisLeases(url)
        assert sum(_claims(leases, "train:r", 6)) == 1
        lease = leases.acquire("train:s", "a", 0.3)
        assert lease is not None and leases.renew(lease, 0.3)
        import time

        time.sleep(0.5)
        taken = leases.acquire("train:s", "b", 30)
        assert taken is not None and not leases.renew(lease, 30)
        leases.release(lease)  # the old holder's release leaves the new lease alone
        assert leases.holder("train:s") == "b"


@pytest.mark.slow
def test_failed_attempts_are_rows_and_a_stale_run_is_abandoned(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """A job that dies is a failed row with its reason, retried under a new run id; a run a
    dead distiller left `running` becomes failed."""

    class DiesOnce(InlineBackend):
        calls = 0

        def run(self, job: TrainJob, store: ModelStore, tick):  # type: ignore[no-untyped-def]
            DiesOnce.calls += 1
            if DiesOnce.calls == 1:
                tick()
                raise JobFailed("the training process died (killed by SIGKILL: killed or OOM)")
            return super().run(job, store, tick)

    store = gateway.state.store
    ctx = TrainingContext(
        store,
        DiesOnce(),
        BackendConfig(retries=1, retry_backoff_s=0.1, progress_every_s=0.01),
        tmp_path,
    )
    route = f"retry-{uuid.uuid4().hex[:6]}"
    job, result, _ = run_with_retries(ctx, intent_job(f"{route}-a", route), "ds-1")
    assert job.run_id.endswith("-r2") and result.steps > 0
    rows = store.query_dicts(
        "SELECT run_id, attempt, argMax(status, updated_at) AS last, argMax(error, updated_at)"
        " AS err FROM training_runs WHERE route = {r:String} GROUP BY run_id, attempt"
        " ORDER BY attempt",
        {"r": route},
    )
    assert [(r["attempt"], r["last"]) for r in rows] == [(1, "failed"), (2, "succeeded")]
    assert "SIGKILL" in rows[0]["err"]

    stale = {c: "" for c in COLUMNS} | {
        "run_id": f"{route}-stale",
        "route": route,
        "candidate": "tiny",
        "dataset_id": "ds-2",
        "losses": [],
        "steps": 0,
        "seconds": 0.0,
        "tokens": 0,
        "tokens_per_s": 0.0,
        "created_at": datetime.now(UTC) - timedelta(hours=1),
        "status": "running",
        "attempt": 1,
        "step": 3,
        "total_steps": 10,
        "loss": None,
        "updated_at": datetime.now(UTC) - timedelta(hours=1),
    }
    store.insert_rows("training_runs", [[stale[c] for c in COLUMNS]], COLUMNS)
    assert f"{route}-stale" in abandon_stale(ctx)
    last = store.query_dicts(
        "SELECT status, error FROM training_runs WHERE run_id = {r:String}"
        " ORDER BY updated_at DESC LIMIT 1",
        {"r": f"{route}-stale"},
    )[0]
    assert last["status"] == "failed" and last["error"].startswith("abandoned")
    assert f"{route}-stale" not in abandon_stale(ctx)


def test_admin_api_asks_the_distiller_for_a_pass(gateway: RunningGateway) -> None:
    base = gateway.base_url.removesuffix("/v1")

    def post(body: dict, key: str = ADMIN_KEY) -> httpx.Response:
        return httpx.post(
            f"{base}/admin/api/distill", json=body, headers={"authorization": f"Bearer {key}"}
        )

    route = next(r for r in gateway.state.router.policies.routes if r.candidates).name
    reply = post({"route": route})
    assert reply.status_code == 202, reply.text
    rows = gateway.state.store.query_dicts(
        "SELECT requested_by, force FROM distill_requests WHERE route = {r:String}"
        " ORDER BY requested_at DESC LIMIT 1",
        {"r": route},
    )
    assert rows == [{"requested_by": "admin", "force": True}]
    from distiller.worker import _requested

    assert _requested(gateway.state.store, route)
    assert post({"route": "no-such-route"}).json()["error"]["code"] == "not_found"
    assert post({"route": route}, key=APP_KEY).status_code == 403
    assert post({"route": route, "extra": 1}).status_code == 400
    runs = api_get(gateway, "/admin/api/runs")
    assert runs.status_code == 200 and isinstance(runs.json()["runs"], list)
    cands = api_get(gateway, "/admin/api/candidates").json()
    assert "runs" in cands
    # The CLI asks the same API.
    import subprocess
    import sys

    cli = [sys.executable, "-m", "flywheel.cli", "distill", "--url", base, "--key", ADMIN_KEY]
    asked = subprocess.run(
        [*cli, "--workload", route, "--force"], capture_output=True, text=True, timeout=120
    )
    assert asked.returncode == 0 and json.loads(asked.stdout)["route"] == route
    status = subprocess.run([*cli, "--status"], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "runs" in json.loads(status.stdout)
    no_key = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "distill", "--url", base, "--status"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in __import__("os").environ.items() if k != "FLYWHEEL_KEY"},
    )
    assert no_key.returncode == 2 and "admin key" in no_key.stderr


@pytest.mark.slow
def test_a_url_model_store_carries_runs_and_the_student_server_loads_from_it(
    gateway: RunningGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `backend.model_store` an fsspec URL, the job works in a scratch folder and moves
    its arguments, progress, artifacts and result through fsspec; nothing lands in the
    distiller's own folder; the student server downloads the model from the URL."""
    from distiller.backends.local import LocalBackend
    from distiller.publishing import publish
    from tests.support.student_server import running_student_server

    monkeypatch.setenv("FLYWHEEL_MODEL_CACHE", str(tmp_path / "cache"))
    bucket = tmp_path / "bucket"
    route = f"url-{uuid.uuid4().hex[:6]}"
    backend = LocalBackend(poll_s=0.2)
    ctx = TrainingContext(
        gateway.state.store,
        backend,
        BackendConfig(retries=0, progress_every_s=0.2),
        tmp_path / "local",
        store_url=f"file://{bucket}",
    )
    try:
        job, _, report = run_with_retries(ctx, intent_job(f"{route}-1", route), "ds-url")
    finally:
        backend.close()
    run = bucket / job.rel_dir
    assert (run / "merged" / "config.json").exists() and (run / "training_log.json").exists()
    assert (run / "result.pkl").exists() and report.n == 10
    assert not (tmp_path / "local" / route).exists(), "the distiller's folder stays empty"
    (row,) = gateway.state.store.query_dicts(
        "SELECT artifact_path FROM training_runs WHERE run_id = {r:String}"
        " AND status = 'succeeded'",
        {"r": job.run_id},
    )
    assert row["artifact_path"] == f"file://{run}/merged"
    with running_student_server() as url:
        note = publish(
            ModelConfig(model="flywheel/url-student", api_base=url),
            ctx.models.location(job.rel_dir),
        )
        assert note.startswith("loaded as url-student"), note
        answer = httpx.post(
            f"{url}/chat/completions",
            json={"model": "url-student", "messages": [{"role": "user", "content": "refund"}]},
            timeout=60,
        )
        assert answer.status_code == 200
    assert len(list((tmp_path / "cache").iterdir())) == 1, "downloaded once into the cache"


@pytest.mark.slow
def test_a_dataset_whose_training_died_is_trained_again_without_new_traffic(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    from contracts.policy import PolicySet, Route
    from distiller.worker import distill_route
    from tests.support.intents import insert_requests, intent_row

    class Down(InlineBackend):
        def run(self, job: TrainJob, store: ModelStore, tick):  # type: ignore[no-untyped-def]
            raise JobFailed("ray: NodeDiedError: the node running the task died")

    name = f"redo-{uuid.uuid4().hex[:6]}"
    insert_requests(gateway, [intent_row(t, i, route=name)[1] for t, i in generate(50, 77)])
    route = Route.model_validate(
        {
            "name": name,
            "teacher": "teacher",
            "candidates": [{"name": "tiny", "model": "student-ok", "base": "local:tiny"}],
            "gate": {"metric": "json_field_match", "fields": ["intent"], "min_examples": 5},
            "training": {"epochs": 1, "pretrain_steps": 5, "min_new_examples": 10},
        }
    )
    policies = PolicySet(routes=[route], models=gateway.state.router.policies.models, version="r")
    store = gateway.state.store

    def ctx(backend: InlineBackend) -> TrainingContext:
        return TrainingContext(store, backend, BackendConfig(retries=0), tmp_path)

    first = distill_route(store, route, policies, tmp_path, ctx=ctx(Down()))
    assert first["runs"] == [{"candidate": "tiny", "failed": first["runs"][0]["failed"]}]
    assert "NodeDiedError" in first["runs"][0]["failed"]
    # No new traffic since: the dead run's dataset is trained again, not skipped.
    again = distill_route(store, route, policies, tmp_path, ctx=ctx(InlineBackend()))
    assert again["new_examples"] == 0 and again["retrying_dataset"] == first["dataset_id"]
    assert again["dataset_id"] == first["dataset_id"] and "state" in again["runs"][0]
    # Trained once it succeeded: the next pass waits for new traffic again.
    idle = distill_route(store, route, policies, tmp_path, ctx=ctx(InlineBackend()))
    assert idle["skipped"].startswith("0 new examples")


def _failed_local_run(backend: LocalBackend, tmp_path: Path, run_id: str) -> tuple[TrainJob, str]:
    """A job through the real local backend that must fail: the job and why (the backend
    is closed after)."""
    from distiller.jobs import write_job

    store = ModelStore(tmp_path)
    job = intent_job(run_id, f"{run_id}-route")
    write_job(job, store)
    try:
        with pytest.raises(JobFailed) as failed:
            backend.run(job, store, lambda: None)
    finally:
        backend.close()
    return job, failed.value.reason


@pytest.mark.slow
def test_a_local_worker_that_dies_leaves_its_signal_and_last_output(tmp_path: Path) -> None:
    """The real local backend (a spawned worker process): the failure names the signal and
    carries the worker's last lines, for the run's row."""
    from tests.support.training_jobs import dies_in_the_worker

    backend = LocalBackend(poll_s=0.2, target=dies_in_the_worker)
    job, reason = _failed_local_run(backend, tmp_path, "run-dies")
    # The signal when the pool still knew its worker (a fresh CI run once had it forget).
    assert reason.startswith(
        ("the training process died (killed by SIGKILL", "the training process died (exit")
    ), reason
    assert f"loading the base for {job.rel_dir}" in reason
    assert "tried to allocate 2.00 GiB" in reason


@pytest.mark.slow
def test_a_spare_worker_outlives_the_thread_that_made_it(tmp_path: Path) -> None:
    """Spare workers are made from job threads that end; the spare must still be there for
    the next run (a parent-death signal killed it with its thread)."""
    import threading
    import time

    from tests.support.training_jobs import writes_nothing

    backend = LocalBackend(poll_s=0.2, target=writes_nothing)

    def make_spare() -> None:
        backend.start()
        time.sleep(8)  # the spare has started (and imported torch) while this thread lives

    maker = threading.Thread(target=make_spare)
    maker.start()
    maker.join()
    time.sleep(2)  # long enough for a spare tied to the thread to have died with it
    spare = backend._spare
    workers = list(spare._processes.values())
    assert workers and all(w.is_alive() for w in workers), "the spare died with its thread"
    # The spare ran the job (which wrote no result): it had not died.
    _, reason = _failed_local_run(backend, tmp_path, "run-spare")
    assert reason == "the job ended without writing its result", reason
