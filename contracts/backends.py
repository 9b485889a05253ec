"""Where the distiller's training jobs run: the `distiller.backend` section of the config.

`local` (the default) runs each job in a spawned process on this machine; `ray` submits it
as a Ray task to a cluster by address; `kubernetes` creates a Job per training from a
manifest template. The job code is the same function in all three (`distiller.jobs`); only
the submission differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from contracts.model_config import Strict

BackendKind = Literal["local", "ray", "kubernetes"]


class RayBackend(Strict):
    address: str = Field(
        default="auto",
        description="the cluster: `auto` (a `ray start` on this machine), `ray://head:10001` "
        "(Ray Client) or `host:6379`",
    )
    namespace: str = "flywheel"
    poll_s: float = Field(default=1.0, gt=0, description="how often a running job is checked")


class KubernetesBackend(Strict):
    api_url: str = Field(
        default="https://kubernetes.default.svc",
        description="the API server (in a pod: the default; outside: `kubectl proxy`'s URL)",
    )
    namespace: str = "flywheel"
    token_file: Path | None = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="bearer token for the API (a missing file: no Authorization header)",
    )
    ca_file: Path | None = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        description="the API server's CA (a missing file: the system's)",
    )
    template: Path = Field(
        default=Path("deploy/k8s/training-job.yaml"),
        description="the Job manifest; `${...}` placeholders are filled per training",
    )
    image: str = Field(default="ghcr.io/flywheel/flywheel:latest", description="has flywheel")
    model_store_claim: str = Field(
        default="flywheel-models", description="PersistentVolumeClaim of the model store"
    )
    model_store_mount: str = Field(
        default="/models", description="where the model store is mounted in the job's pod"
    )
    poll_s: float = Field(default=5.0, gt=0)


class Backend(Strict):
    kind: BackendKind = "local"
    concurrency: int = Field(
        default=1, ge=1, description="trainings in flight at once (routes train in parallel)"
    )
    retries: int = Field(
        default=2, ge=0, description="a job that dies (killed, OOM, node lost) is retried"
    )
    retry_backoff_s: float = Field(
        default=30.0, ge=0, description="wait before retry n: backoff * 2**(n-1)"
    )
    lease_ttl_s: float = Field(
        default=120.0,
        gt=0,
        description="a route's training lease lapses this long after its "
        "holder's last heartbeat (a dead distiller's route is taken over)",
    )
    progress_every_s: float = Field(
        default=5.0, gt=0, description="how often a running job's progress becomes a row"
    )
    model_store: str | None = Field(
        default=None,
        description="an fsspec URL (s3://bucket/prefix, gs://..., file:///shared) for runs and "
        "artifacts that every node reaches; unset: the local `distiller.model_dir`",
    )
    ray: RayBackend = Field(default_factory=RayBackend)
    kubernetes: KubernetesBackend = Field(default_factory=KubernetesBackend)
