"""The `kubernetes` backend: a Job per training, from the manifest template in
`deploy/k8s/training-job.yaml`, created and watched through the API server's REST API.

The pod runs `python -m distiller.jobs --model-store <mount> <run dir>`, the same function
the other backends run, with the model store's PersistentVolumeClaim mounted; the distiller
reads the Job's conditions (Complete / Failed with its reason: OOMKilled, DeadlineExceeded,
BackoffLimitExceeded...) and the result the pod wrote to the model store.

Invariant: a Job that is gone (deleted, lost with its node) is a failed run, never one that
runs forever: a GET that 404s ends the wait.
"""

from __future__ import annotations

import re
import ssl
import string
from typing import Any

import httpx
import yaml

from contracts.backends import KubernetesBackend as K8sConfig
from distiller.backends.base import JobFailed, Tick
from distiller.evaluation import EvalReport
from distiller.jobs import TrainJob, read_result
from distiller.model_store import ModelStore
from distiller.training import TrainResult

DEFAULT_DEADLINE_S = 6 * 3600


def _dns_label(value: str, limit: int = 63) -> str:
    """A valid Kubernetes name/label value from any text (lower case, [a-z0-9-], bounded)."""
    clean = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    return clean[:limit].rstrip("-") or "x"


def _gib(memory_gb: float) -> str:
    return f"{max(1, round(memory_gb * 1024))}Mi"


def render(
    template: str, job: TrainJob, config: K8sConfig, store_url: str | None = None
) -> dict[str, Any]:
    """The Job manifest for one training, from the template's text. `store_url`: a URL
    model store the pod reaches itself (else the mounted claim)."""
    res = job.resources
    deadline = int(job.settings.time_budget_s * 2 + 1800) if job.settings.time_budget_s else 0
    values = {
        "job_name": _dns_label(f"fw-{job.run_id}"),
        "namespace": config.namespace,
        "route_label": _dns_label(job.route),
        "candidate_label": _dns_label(job.candidate),
        "run_label": _dns_label(job.run_id),
        "image": config.image,
        "model_store_mount": config.model_store_mount,
        "model_store": store_url or config.model_store_mount,
        "model_store_claim": config.model_store_claim,
        "rel_dir": job.rel_dir,
        "cpus": f"{res.cpus:g}",
        "gpus": f"{res.gpus:g}",
        "memory": _gib(res.memory_gb) if res.memory_gb else "",
        "deadline_s": str(deadline or DEFAULT_DEADLINE_S),
    }
    manifest: dict[str, Any] = yaml.safe_load(string.Template(template).substitute(values))
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    resources = container.setdefault("resources", {})
    for part in ("requests", "limits"):
        section = resources.get(part) or {}
        if not res.memory_gb:
            section.pop("memory", None)
        if not res.gpus:
            section.pop("nvidia.com/gpu", None)
        if section:
            resources[part] = section
        else:
            resources.pop(part, None)
    return manifest


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, config: K8sConfig, client: httpx.Client | None = None) -> None:
        self.config = config
        self.template = config.template.read_text()
        self._client = client or httpx.Client(
            base_url=config.api_url, headers=self._auth(), verify=self._verify(), timeout=30
        )

    def _auth(self) -> dict[str, str]:
        path = self.config.token_file
        if path is not None and path.exists():
            return {"authorization": f"Bearer {path.read_text().strip()}"}
        return {}

    def _verify(self) -> ssl.SSLContext | bool:
        path = self.config.ca_file
        if path is not None and path.exists():
            return ssl.create_default_context(cafile=str(path))
        return True

    def _jobs(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.config.namespace}/jobs"

    def submit(self, job: TrainJob, store: ModelStore) -> str:
        manifest = render(self.template, job, self.config, store.root if store.remote else None)
        try:
            reply = self._client.post(self._jobs(), json=manifest)
        except httpx.HTTPError as e:
            raise JobFailed(f"kubernetes API unreachable: {e}") from e
        if reply.status_code not in (200, 201, 202):
            raise JobFailed(f"kubernetes refused the Job ({reply.status_code}): {_message(reply)}")
        return str(manifest["metadata"]["name"])

    def status(self, name: str) -> tuple[str, str]:
        """('running' | 'complete' | 'failed', reason)."""
        try:
            reply = self._client.get(f"{self._jobs()}/{name}")
        except httpx.HTTPError as e:
            return "running", f"API unreachable: {e}"  # transient: ask again next tick
        if reply.status_code == 404:
            return "failed", "the Job is gone (deleted, or lost with its node)"
        if reply.status_code != 200:
            return "running", f"status {reply.status_code}"
        status = reply.json().get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond.get("type") == "Complete":
                return "complete", ""
            if cond.get("type") == "Failed":
                reason = cond.get("reason") or "Failed"
                return "failed", f"{reason}: {cond.get('message') or ''}".strip(": ")
        if status.get("succeeded"):
            return "complete", ""
        return "running", ""

    def run(self, job: TrainJob, store: ModelStore, tick: Tick) -> tuple[TrainResult, EvalReport]:
        import time

        name = self.submit(job, store)
        while True:
            state, reason = self.status(name)
            if state == "complete":
                break
            if state == "failed":
                raise JobFailed(f"kubernetes Job {name} failed: {reason}"[:500])
            tick()
            time.sleep(self.config.poll_s)
        found = read_result(store, job.rel_dir)
        if found is None:
            raise JobFailed(f"Job {name} completed without a result in the model store")
        return found

    def close(self) -> None:
        self._client.close()


def _message(reply: httpx.Response) -> str:
    try:
        return str(reply.json().get("message", reply.text))[:300]
    except ValueError:
        return reply.text[:300]
