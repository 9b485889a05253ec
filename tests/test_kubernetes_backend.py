"""The Kubernetes training backend without a cluster: the Job manifest validated against
the Kubernetes schema, and its submission driven against a fake API server that checks the
request shapes and reports the Job's outcome."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from contracts.backends import Backend as BackendConfig
from contracts.backends import KubernetesBackend as K8sConfig
from contracts.training import Training
from distiller.backends import JobFailed
from distiller.backends.kubernetes import KubernetesBackend, render
from distiller.jobs import write_job
from distiller.model_store import ModelStore
from tests.support.fake_kube import TOKEN, FakeKube
from tests.support.training_jobs import intent_job

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "training-job.yaml"


def test_job_manifest_is_valid_kubernetes() -> None:
    config = K8sConfig(template=TEMPLATE, namespace="ml", model_store_claim="models-rwx")
    job = intent_job("Route_A-tiny-1", cpus=4, gpus=1, memory_gb=16)
    gpu = render(TEMPLATE.read_text(), job, config)
    kubernetes_validate.validate(gpu, kubernetes_validate.latest_version(), strict=True)
    pod = gpu["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert gpu["metadata"]["name"] == "fw-route-a-tiny-1" and gpu["metadata"]["namespace"] == "ml"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "16384Mi"}
    assert container["command"][-1] == "k8s-route/tiny/Route_A-tiny-1"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "models-rwx"
    assert container["volumeMounts"][0]["mountPath"] == "/models"
    cpu_only = render(TEMPLATE.read_text(), intent_job("r-2"), config)
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
    job = intent_job("k8s-ok")
    write_job(job, ModelStore(store))
    result, report = backend.run(job, ModelStore(store), lambda: ticks.append(1))
    assert result.steps > 0 and (result.merged / "config.json").exists()
    assert result.merged.is_relative_to(store), "paths come back in this machine's store"
    assert report.n == 10 and ticks, "the distiller heard from the wait"
    (created,) = fake.created
    kubernetes_validate.validate(created, kubernetes_validate.latest_version(), strict=True)
    assert fake.problems == []

    fake.outcomes["fw-k8s-deadline"] = "fail:DeadlineExceeded"
    write_job(intent_job("k8s-deadline"), ModelStore(store))
    with pytest.raises(JobFailed, match="DeadlineExceeded"):
        backend.run(intent_job("k8s-deadline"), ModelStore(store), lambda: None)
    fake.outcomes["fw-k8s-gone"] = "vanish"
    with pytest.raises(JobFailed, match="gone"):
        backend.run(intent_job("k8s-gone"), ModelStore(store), lambda: None)


def test_kubernetes_api_refusal_is_a_failed_run(tmp_path: Path) -> None:
    fake = FakeKube("ml", "/models", tmp_path)
    try:
        config = K8sConfig(api_url=fake.url, namespace="ml", token_file=None, template=TEMPLATE)
        with pytest.raises(JobFailed, match="refused the Job \\(401\\)"):
            job = intent_job("no-token")
            KubernetesBackend(config).run(job, ModelStore(tmp_path), lambda: None)
        assert fake.problems and "no bearer token" in fake.problems[0]
    finally:
        fake.stop()


def test_backend_config_is_typed() -> None:
    cfg = BackendConfig.model_validate(
        yaml.safe_load("kind: ray\nconcurrency: 3\nray: {address: 'ray://head:10001'}")
    )
    assert cfg.kind == "ray" and cfg.ray.address == "ray://head:10001"
    with pytest.raises(ValueError, match="kind"):
        BackendConfig.model_validate({"kind": "slurm"})
    with pytest.raises(ValueError, match="gpus"):
        Training.model_validate({"resources": {"gpus": -1}})
