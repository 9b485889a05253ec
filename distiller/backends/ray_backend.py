"""The `ray` backend: each job is a Ray task on a cluster found by address, asking for the
CPUs, GPUs and memory its route declares (`training.resources`).

The task is `distiller.jobs.run_job`, the same function the other backends run; arguments
and results go through the model store, which every node must reach (a shared volume, or
the same path on every node). Ray's own task retries are off: a dead worker comes back to
the distiller as a failed run with its reason, and the distiller retries with backoff.
"""

from __future__ import annotations

import threading
from typing import Any

from contracts.backends import RayBackend as RayConfig
from distiller.backends.base import JobFailed, Tick, job_error
from distiller.evaluation import EvalReport
from distiller.jobs import TrainJob, read_result, run_job
from distiller.model_store import ModelStore
from distiller.training import TrainResult


class RayBackend:
    name = "ray"

    def __init__(self, config: RayConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._refs: set[Any] = set()

    def _connect(self) -> Any:
        import ray

        with self._lock:
            if not ray.is_initialized():
                ray.init(
                    address=self.config.address,
                    namespace=self.config.namespace,
                    log_to_driver=False,
                    configure_logging=False,
                )
        return ray

    @staticmethod
    def options(job: TrainJob) -> dict[str, Any]:
        res = job.resources
        out: dict[str, Any] = {
            "num_cpus": res.cpus,
            "num_gpus": res.gpus,
            "max_retries": 0,  # the distiller retries, with backoff and a row per attempt
            "name": f"flywheel-train:{job.run_id}",
        }
        if res.memory_gb is not None:
            out["memory"] = int(res.memory_gb * 2**30)
        return out

    def run(self, job: TrainJob, store: ModelStore, tick: Tick) -> tuple[TrainResult, EvalReport]:
        ray = self._connect()
        from ray import exceptions as rx

        try:
            ref = ray.remote(run_job).options(**self.options(job)).remote(store.root, job.rel_dir)
        except Exception as e:  # the cluster refused the task (bad resources, not connected)
            raise JobFailed(f"ray did not accept the job: {type(e).__name__}: {e}") from e
        self._refs.add(ref)
        try:
            while not ray.wait([ref], timeout=self.config.poll_s)[0]:
                tick()
            ray.get(ref)
        except rx.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else e
            raise job_error(cause) from e
        except rx.RayError as e:  # worker crashed, node died, out of memory, cancelled
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise JobFailed(f"ray: {type(e).__name__}: {first}"[:500]) from e
        finally:
            self._refs.discard(ref)
        found = read_result(store, job.rel_dir)
        if found is None:
            raise JobFailed("the ray task ended without writing its result (model store shared?)")
        return found

    def close(self) -> None:
        import ray

        for ref in list(self._refs):
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
