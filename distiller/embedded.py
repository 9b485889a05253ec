"""The distiller inside `flywheel serve` (embedded mode): a thread for the bookkeeping
through the gateway's store, and one warm worker process for each training and evaluation.

Invariant: training never runs on the gateway's event loop or holds its GIL; a worker dies
with its parent, so a killed gateway leaves no training behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from contracts.policy import PolicySet
from distiller.evaluation import EvalReport
from distiller.training import TrainResult
from distiller.worker import distill_route, guard_pass
from store import Store

log = logging.getLogger("flywheel.distiller")


def die_with_parent() -> None:
    """In a training worker: ask Linux to kill this process when its parent dies, so a killed
    gateway (or demo, or test) never leaves a training worker holding gigabytes behind."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def warm_worker() -> None:
    """A training worker's start: die with the parent, and import the heavy libraries now,
    while the route still collects traffic, rather than when its trigger fires (seen: a
    fresh worker's imports took most of a minute on a busy machine)."""
    die_with_parent()
    import sklearn.linear_model  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401


class EmbeddedDistiller:
    """The distiller inside `flywheel serve` (embedded mode: this process owns the store).

    A thread does curation, datasets and bookkeeping through the gateway's store; each
    training and evaluation runs in a spawned subprocess, so neither the event loop nor the
    GIL is held by training.
    """

    def __init__(
        self, store: Store, policies: Callable[[], PolicySet], model_dir: Path, interval_s: float
    ) -> None:
        import threading

        self.store = store
        self.policies = policies
        self.model_dir = model_dir
        self.interval_s = interval_s
        self.last: list[dict[str, Any]] = []
        self._pool: Any = None  # the training worker pool while a run is in flight
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="distiller", daemon=True)

    def start(self) -> None:
        self._pool = self._new_pool()
        self._thread.start()

    @staticmethod
    def _new_pool() -> Any:
        """A one-worker pool whose worker is spawned now and warms up (imports) while the
        route still collects traffic."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=warm_worker
        )
        pool.submit(int)  # spawns the worker; it stays for the next run
        return pool

    def stop(self) -> None:
        """Stop the loop and any training in flight (a run that is cut short is retried on
        the next start: its dataset is unchanged)."""
        self._stop.set()
        pool = self._pool
        if pool is not None:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)

    def _subprocess(
        self, fn: Callable[..., tuple[TrainResult, EvalReport]], *args: Any
    ) -> tuple[TrainResult, EvalReport]:
        pool = self._pool or self._new_pool()
        self._pool = pool
        try:
            # A worker that dies (killed, out of memory) raises BrokenProcessPool here.
            result: tuple[TrainResult, EvalReport] = pool.submit(fn, *args).result()
        finally:
            # One run per worker: its memory goes back, and a warm one waits for the next.
            self._pool = None if self._stop.is_set() else self._new_pool()
            pool.shutdown(wait=False)
        return result

    def run_once(self) -> list[dict[str, Any]]:
        policies = self.policies()
        out = []
        for route in policies.routes:
            if route.candidates:
                out.append(
                    distill_route(
                        self.store, route, policies, self.model_dir, runner=self._subprocess
                    )
                )
        out += guard_pass(self.store, policies, self.model_dir)
        self.last = out
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                for item in self.run_once():
                    log.info("distiller: %s", orjson.dumps(item).decode())
            except Exception:
                log.exception("distiller pass failed; retrying next interval")
