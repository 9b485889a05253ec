"""The `local` backend: each job in a spawned process on this machine (today's default).

A spare worker process is spawned ahead and warms up (imports torch and transformers)
while the route still collects traffic; each job takes one and the process exits after it,
so its memory goes back. Jobs run at once up to the distiller's concurrency, each in its
own process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from distiller.backends.base import JobFailed, Tick, job_error
from distiller.evaluation import EvalReport
from distiller.jobs import TrainJob, read_result, run_job
from distiller.model_store import ModelStore
from distiller.training import TrainResult


def die_with_parent() -> None:
    """In a training worker: ask Linux to kill this process when its parent dies, so a killed
    gateway (or demo, or test) never leaves a training worker holding gigabytes behind."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def exit_with_parent(poll_s: float = 0.5) -> None:
    """In a training worker: exit once the process that spawned it is gone. Not a
    parent-death signal: Linux sends that when the *thread* that created the child ends, and
    spare workers are made from job threads that end (a spare died with its thread, and the
    next run failed with `A child process terminated abruptly`)."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def warm_worker() -> None:
    """A training worker's start: exit with the parent, and import the heavy libraries now,
    while the route still collects traffic, rather than when its trigger fires (seen: a
    fresh worker's imports took most of a minute on a busy machine)."""
    exit_with_parent()
    import sklearn.linear_model  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401


class InlineBackend:
    """The job in this thread (tests and scripts that want no extra process)."""

    name = "inline"

    def run(self, job: TrainJob, store: ModelStore, tick: Tick) -> tuple[TrainResult, EvalReport]:
        try:
            run_job(store.root, job.rel_dir)
        except Exception as e:
            raise job_error(e) from e
        found = read_result(store, job.rel_dir)
        if found is None:
            raise JobFailed("the job ended without writing its result")
        return found

    def close(self) -> None:
        pass


def _signal_name(code: int | None) -> str:
    import signal

    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def run_logged(target: Callable[[str, str], None], root: str, rel_dir: str, log: str) -> None:
    """In the worker: run the job with this process's output (Python's and native
    libraries', fds 1 and 2) in `log`, so a worker that dies leaves its last words there."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    target(root, rel_dir)


def _tail(path: Path, lines: int = 15, chars: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])[-chars:]


class LocalBackend:
    name = "local"

    def __init__(self, poll_s: float = 1.0, target: Callable[[str, str], None] = run_job) -> None:
        self.poll_s = poll_s
        self._target = target  # what a worker runs for a job (tests give one that dies)
        self._lock = threading.Lock()
        self._spare: Any = None
        self._running: set[Any] = set()
        self._closed = False

    @staticmethod
    def _new_pool() -> Any:
        pool = ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=warm_worker
        )
        pool.submit(int)  # spawns the worker now; it stays for the next job
        return pool

    def start(self) -> None:
        """Spawn the spare worker now (optional: `run` spawns one when none is spare)."""
        with self._lock:
            if self._spare is None and not self._closed:
                self._spare = self._new_pool()

    def _take(self) -> Any:
        with self._lock:
            if self._closed:
                raise JobFailed("the distiller is stopping")
            pool, self._spare = self._spare, None
            if pool is not None and getattr(pool, "_broken", False):
                # The spare died while it waited (killed, out of memory): a fresh one.
                pool.shutdown(wait=False)
                pool = None
            pool = pool or self._new_pool()
            self._running.add(pool)
            return pool

    def _give_back(self, pool: Any) -> None:
        with self._lock:
            self._running.discard(pool)
            if self._spare is None and not self._closed:
                self._spare = self._new_pool()
        pool.shutdown(wait=False)

    @staticmethod
    def _log_path(job: TrainJob, store: ModelStore) -> Path:
        """The worker's output: beside the run's artifacts in a local store, else a temp file."""
        if not store.remote:
            folder = Path(store.root) / job.rel_dir
            folder.mkdir(parents=True, exist_ok=True)
            return folder / "worker.log"
        return Path(tempfile.gettempdir()) / f"flywheel-{job.run_id}.log"

    def run(self, job: TrainJob, store: ModelStore, tick: Tick) -> tuple[TrainResult, EvalReport]:
        pool = self._take()
        log = self._log_path(job, store)
        try:
            future = pool.submit(run_logged, self._target, store.root, job.rel_dir, str(log))
            # The worker, held now: once the pool breaks it forgets its processes.
            workers = list((getattr(pool, "_processes", None) or {}).values())
            while True:
                try:
                    future.result(timeout=self.poll_s)
                    break
                except FutureTimeout:
                    tick()
                except BrokenProcessPool:
                    for proc in workers:
                        proc.join(5)
                    codes = [p.exitcode for p in workers if p.exitcode is not None]
                    how = _signal_name(codes[0]) if codes else "exit status unknown"
                    last = _tail(log)
                    raise JobFailed(
                        f"the training process died ({how}; killed or out of memory?)"
                        + (
                            f"; its last output ({log}):\n{last}"
                            if last
                            else f"; no output in {log}"
                        )
                    ) from None
                except Exception as e:  # the job's own error, raised in the worker
                    raise job_error(e) from e
        finally:
            self._give_back(pool)
        found = read_result(store, job.rel_dir)
        if found is None:
            raise JobFailed("the job ended without writing its result")
        return found

    def close(self) -> None:
        """Stop every job in flight (a run cut short is retried on the next start)."""
        with self._lock:
            self._closed = True
            pools = [*self._running, *([self._spare] if self._spare else [])]
            self._spare = None
        for pool in pools:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
