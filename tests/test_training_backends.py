"""Training at scale without a cluster: the Kubernetes backend's Job manifest validated
against the Kubernetes schema and its submission driven against a fake API server that
checks the request shapes; leases (ClickHouse and a real Redis) that let one distiller train
a route; runs a dead distiller left `running` turned failed and retrained on their dataset;
the admin API that asks a running gateway's distiller for a pass.

The Ray backend, on a real local Ray cluster, is in `test_ray_training.py`.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml

from contracts.backends import Backend as BackendConfig
from contracts.backends import KubernetesBackend as K8sConfig
from contracts.model_config import ModelConfig
from contracts.policy import Gate
from contracts.training import Resources, Training
from distiller.backends import JobFailed
from distiller.backends.kubernetes import KubernetesBackend, render
from distiller.backends.local import InlineBackend
from distiller.examples import Example
from distiller.jobs import TrainJob, write_job
from distiller.leases import RedisLeases, StoreLeases
from distiller.model_store import ModelStore
from distiller.runs import COLUMNS, TrainingContext, abandon_stale, run_with_retries
from tests.support.dashboard_data import api_get
from tests.support.fake_kube import TOKEN, FakeKube
from tests.support.gateway import ADMIN_KEY, APP_KEY, RunningGateway
from tests.support.intents import SYSTEM, generate
from tests.support.redis_server import running_redis

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "training-job.yaml"


def _job(run_id: str, route: str = "k8s-route", **resources: float) -> TrainJob:
    examples = [
        Example(
            str(uuid.uuid4()),
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            json.dumps({"intent": intent}),
        )
        for text, intent in generate(40, 21)
    ]
    return TrainJob(
        run_id,
        route,
        "tiny",
        f"{route}/tiny/{run_id}",
        Resources(**resources),
        "generator",
        "local:tiny",
        [SYSTEM] + [t for t, _ in generate(40, 21)],
        examples[:30],
        examples[30:],
        Training(epochs=1, pretrain_steps=5, max_steps=4),
        "eval-k8s",
        Gate(metric="json_field_match", fields=["intent"], threshold=0.0, min_examples=1),
        ModelConfig(model="openai/teacher", api_base="http://127.0.0.1:9/v1"),
    )


def test_job_manifest_is_valid_kubernetes() -> None:
    config = K8sConfig(template=TEMPLATE, namespace="ml", model_store_claim="models-rwx")
    gpu = render(TEMPLATE.read_text(), _job("Route_A-tiny-1", cpus=4, gpus=1, memory_gb=16), config)
    kubernetes_validate.validate(gpu, kubernetes_validate.latest_version(), strict=True)
    pod = gpu["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert gpu["metadata"]["name"] == "fw-route-a-tiny-1" and gpu["metadata"]["namespace"] == "ml"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "16384Mi"}
    assert container["command"][-1] == "k8s-route/tiny/Route_A-tiny-1"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "models-rwx"
    assert container["volumeMounts"][0]["mountPath"] == "/models"
    cpu_only = render(TEMPLATE.read_text(), _job("r-2"), config)
    kubernetes_validate.validate(cpu_only, kubernetes_validate.latest_version(), strict=True)
    assert cpu_only["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1"}
    }
    broken = {**cpu_only, "spec": {**cpu_only["spec"], "backoffLimit": "never"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


@pytest.fixture
def kube(tmp_path: Path) -> tuple[FakeKube, KubernetesBackend, Path]:
    store = tmp_path / "models"
    fake = FakeKube("ml", "/models", store)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    config = K8sConfig(
        api_url=fake.url,
        namespace="ml",
        token_file=token,
        ca_file=None,
        template=TEMPLATE,
        poll_s=0.2,
    )
    yield fake, KubernetesBackend(config), store
    fake.stop()


@pytest.mark.slow
def test_kubernetes_backend_runs_the_job_and_reports_failures(
    kube: tuple[FakeKube, KubernetesBackend, Path],
) -> None:
    fake, backend, store = kube
    ticks: list[int] = []
    job = _job("k8s-ok")
    write_job(job, ModelStore(store))
    result, report = backend.run(job, ModelStore(store), lambda: ticks.append(1))
    assert result.steps > 0 and (result.merged / "config.json").exists()
    assert result.merged.is_relative_to(store), "paths come back in this machine's store"
    assert report.n == 10 and ticks, "the distiller heard from the wait"
    (created,) = fake.created
    kubernetes_validate.validate(created, kubernetes_validate.latest_version(), strict=True)
    assert fake.problems == []

    fake.outcomes["fw-k8s-deadline"] = "fail:DeadlineExceeded"
    write_job(_job("k8s-deadline"), ModelStore(store))
    with pytest.raises(JobFailed, match="DeadlineExceeded"):
        backend.run(_job("k8s-deadline"), ModelStore(store), lambda: None)
    fake.outcomes["fw-k8s-gone"] = "vanish"
    with pytest.raises(JobFailed, match="gone"):
        backend.run(_job("k8s-gone"), ModelStore(store), lambda: None)


def test_kubernetes_api_refusal_is_a_failed_run(tmp_path: Path) -> None:
    fake = FakeKube("ml", "/models", tmp_path)
    try:
        config = K8sConfig(api_url=fake.url, namespace="ml", token_file=None, template=TEMPLATE)
        with pytest.raises(JobFailed, match="refused the Job \\(401\\)"):
            KubernetesBackend(config).run(_job("no-token"), ModelStore(tmp_path), lambda: None)
        assert fake.problems and "no bearer token" in fake.problems[0]
    finally:
        fake.stop()


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
    job, result, _ = run_with_retries(ctx, _job(f"{route}-a", route), "ds-1")
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


def test_backend_config_is_typed() -> None:
    cfg = BackendConfig.model_validate(
        yaml.safe_load("kind: ray\nconcurrency: 3\nray: {address: 'ray://head:10001'}")
    )
    assert cfg.kind == "ray" and cfg.ray.address == "ray://head:10001"
    with pytest.raises(ValueError, match="kind"):
        BackendConfig.model_validate({"kind": "slurm"})
    with pytest.raises(ValueError, match="gpus"):
        Training.model_validate({"resources": {"gpus": -1}})


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
        job, _, report = run_with_retries(ctx, _job(f"{route}-1", route), "ds-url")
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
