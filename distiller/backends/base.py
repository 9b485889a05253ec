"""What every training backend shares: the interface, and how a failure is reported.

Invariant: `Backend.run` returns the job's result or raises: `JobFailed` when the job died
or failed (retryable), or the job's own `NotAClosedSet` / `NotStructured` /
`BaseUnavailable` (the candidate cannot train this route as set; retrying would not help).
It never returns while the job runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from distiller.evaluation import EvalReport
from distiller.jobs import TrainJob
from distiller.model_store import ModelStore
from distiller.training import TrainResult

Tick = Callable[[], None]


class JobFailed(Exception):
    """The job did not finish: its process or node died, it ran out of memory, the cluster
    refused it, or its code raised. `reason` says which, for the run's row."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Backend(Protocol):
    name: str

    def run(
        self, job: TrainJob, store: ModelStore, tick: Tick
    ) -> tuple[TrainResult, EvalReport]: ...

    def close(self) -> None: ...


def job_error(exc: BaseException) -> BaseException:
    """What to raise for an exception the job's code raised: the 'cannot train' errors as
    they are, anything else as a retryable failure naming it."""
    from distiller.bases import BaseUnavailable
    from distiller.classifier import NotAClosedSet
    from distiller.structure_inference import NotStructured

    if isinstance(exc, NotAClosedSet | NotStructured | BaseUnavailable):
        return exc
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return JobFailed(f"the job raised {type(exc).__name__}: {first}"[:500])
