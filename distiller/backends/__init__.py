"""Training backends: where a `TrainJob` runs. Each one submits `distiller.jobs.run_job`
and waits for it, calling `tick` while it waits (progress rows, lease renewal); the contract
they keep is in `base.py`.
"""

from __future__ import annotations

from contracts.backends import Backend as BackendConfig
from distiller.backends.base import Backend, JobFailed, Tick, job_error

__all__ = ["Backend", "JobFailed", "Tick", "job_error", "make_backend"]


def make_backend(config: BackendConfig) -> Backend:
    if config.kind == "ray":
        from distiller.backends.ray_backend import RayBackend

        return RayBackend(config.ray)
    if config.kind == "kubernetes":
        from distiller.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(config.kubernetes)
    from distiller.backends.local import LocalBackend

    return LocalBackend()
