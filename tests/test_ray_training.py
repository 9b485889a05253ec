"""The distiller's `ray` backend on a real local Ray cluster (`ray start --head` on 127.0.0.1,
one CPU): two routes train at once, each run's row shows progress before it finishes, a
passing student is published and serves; a Ray worker killed mid-training is a failed run
with its reason, then a successful retry.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.backends import Backend as BackendConfig
from contracts.backends import RayBackend as RayConfig
from contracts.model_config import ModelConfig
from contracts.policy import PolicySet, Route
from distiller.backends.ray_backend import RayBackend
from distiller.leases import StoreLeases
from distiller.runs import TrainingContext
from distiller.worker import distill_pass, distill_route
from store.runs import latest_runs
from tests.support.gateway import RunningGateway
from tests.support.intents import generate, insert_requests, intent_row
from tests.support.ray_cluster import local_ray_cluster
from tests.support.student_server import running_student_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    with local_ray_cluster(cpus=1) as address:
        yield address


def _route(name: str, model: str, epochs: float, pretrain: int) -> Route:
    return Route.model_validate(
        {
            "name": name,
            "teacher": "teacher",
            "candidates": [{"name": "tiny", "model": model, "base": "local:tiny"}],
            # The gate is not what this tests: any trained student passes it.
            "gate": {
                "metric": "json_field_match",
                "fields": ["intent"],
                "threshold": 0.0,
                "min_examples": 5,
            },
            "training": {
                "epochs": epochs,
                "pretrain_steps": pretrain,
                "min_new_examples": 10,
                "early_stopping_patience": 0,
                "resources": {"cpus": 0.5},  # two fit the one-CPU cluster at once
            },
        }
    )


def _traffic(gateway: RunningGateway, route: str, n: int, seed: int) -> None:
    insert_requests(gateway, [intent_row(t, i, route=route)[1] for t, i in generate(n, seed)])


def _ctx(gateway: RunningGateway, address: str, model_dir: Path, **cfg: Any) -> TrainingContext:
    config = BackendConfig(kind="ray", progress_every_s=0.3, **cfg)
    return TrainingContext(
        gateway.state.store,
        RayBackend(RayConfig(address=address, poll_s=0.2)),
        config,
        model_dir,
        StoreLeases(gateway.state.store, settle_s=0.2),
    )


def _rows(gateway: RunningGateway, route: str) -> list[dict[str, Any]]:
    return gateway.state.store.query_dicts(
        "SELECT run_id, attempt, status, step, error, updated_at FROM training_runs"
        " WHERE route = {r:String} ORDER BY updated_at",
        {"r": route},
    )


def test_two_routes_train_at_once_with_progress_and_the_student_serves(
    gateway: RunningGateway, ray_address: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    names = [f"ray-a-{tag}", f"ray-b-{tag}"]
    for seed, name in enumerate(names):
        _traffic(gateway, name, 70, 100 + seed)
    with running_student_server() as url:
        models = dict(gateway.state.router.policies.models)
        for name in names:
            models[f"student-{name}"] = ModelConfig(
                model=f"flywheel/{name}", api_base=url, price={"input_per_million": "0.01"}
            )
        policies = PolicySet(
            routes=[_route(n, f"student-{n}", epochs=2, pretrain=20) for n in names],
            models=models,
            version="ray",
        )
        ctx = _ctx(gateway, ray_address, tmp_path, concurrency=2, retries=0)
        out: list[dict[str, Any]] = []
        worker = threading.Thread(target=lambda: out.extend(distill_pass(ctx, policies)))
        worker.start()
        progress: dict[str, dict[str, Any]] = {}
        while worker.is_alive():
            for name in names:
                for run in latest_runs(gateway.state.store, name):
                    if run["status"] == "running" and run["step"] > 0 and name not in progress:
                        progress[name] = run
            time.sleep(0.2)
        worker.join()
        assert set(progress) == set(names), "each run showed its steps while it ran"
        assert all(p["total_steps"] >= p["step"] > 0 for p in progress.values())
        by_route = {s["route"]: s for s in out}
        for name in names:
            (run,) = by_route[name]["runs"]
            assert run["state"] == "shadow", run
            assert run["published"].startswith(f"loaded as {name}"), run
        # Concurrent: each route's run started before the other's finished.
        spans = []
        for name in names:
            rows = _rows(gateway, name)
            start = min(r["updated_at"] for r in rows if r["status"] == "running")
            end = max(r["updated_at"] for r in rows if r["status"] == "succeeded")
            spans.append((start, end))
        assert max(s for s, _ in spans) < min(e for _, e in spans), spans
        # Trained on a Ray worker, not here.
        log = json.loads(
            Path(by_route[names[0]]["runs"][0]["artifact"])
            .parent.joinpath("training_log.json")
            .read_text()
        )
        assert log["pid"] != os.getpid()
        answer = httpx.post(
            f"{url}/chat/completions",
            json={
                "model": names[0],
                "messages": [{"role": "user", "content": "Ana here, I lost my card"}],
                "max_tokens": 16,
            },
            timeout=60,
        )
        # The published run answers (a tiny LM trained for two epochs may well stop at once:
        # its text is not the point, that the server has the Ray-trained run loaded is).
        assert answer.status_code == 200, answer.text
        served = answer.json()
        assert served["model"] == names[0] and served["object"] == "chat.completion"
        assert isinstance(served["choices"][0]["message"]["content"], str)
        assert 0.0 <= served["confidence"] <= 1.0


def test_a_killed_ray_worker_is_a_failed_run_then_a_retry_succeeds(
    gateway: RunningGateway, ray_address: str, tmp_path: Path
) -> None:
    name = f"ray-kill-{uuid.uuid4().hex[:6]}"
    _traffic(gateway, name, 60, 300)
    policies = PolicySet(
        routes=[_route(name, "student-ok", epochs=6, pretrain=20)],
        models=gateway.state.router.policies.models,
        version="ray-kill",
    )
    ctx = _ctx(gateway, ray_address, tmp_path, retries=1, retry_backoff_s=0.5)
    out: list[dict[str, Any]] = []
    worker = threading.Thread(
        target=lambda: out.append(
            distill_route(ctx.store, policies.routes[0], policies, tmp_path, ctx=ctx)
        )
    )
    worker.start()
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and worker.is_alive() and time.monotonic() < deadline:
        for report in tmp_path.glob(f"{name}/tiny/*/progress.json"):
            data = json.loads(report.read_text())
            if data.get("stage") == "train" and data.get("pid") not in (None, os.getpid()):
                os.kill(int(data["pid"]), signal.SIGKILL)
                killed = data["pid"]
                break
        time.sleep(0.1)
    worker.join()
    assert killed is not None, "the run reached training"
    (run,) = out[0]["runs"]
    assert run["state"] == "shadow" and run["run_id"].endswith("-r2"), run
    last = {}
    for r in _rows(gateway, name):
        last[(r["run_id"], r["attempt"])] = r
    attempts = sorted((k[1], v["status"], v["error"]) for k, v in last.items())
    assert [(a, s) for a, s, _ in attempts] == [(1, "failed"), (2, "succeeded")]
    assert attempts[0][2].startswith("ray: "), attempts[0][2]
