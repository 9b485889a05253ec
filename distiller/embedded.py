"""The distiller inside `flywheel serve` (embedded mode): a thread for the bookkeeping
through the gateway's store; each training and evaluation runs where the configured backend
runs it (by default a spawned local process, one warm worker waiting).

Invariant: training never runs on the gateway's event loop or holds its GIL; a local worker
dies with its parent, so a killed gateway leaves no training behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contracts.backends import Backend as BackendConfig
from contracts.policy import PolicySet
from distiller.backends import make_backend
from distiller.backends.local import LocalBackend, die_with_parent
from distiller.leases import Leases
from distiller.runs import TrainingContext
from distiller.worker import distill_pass
from store import Store

__all__ = ["EmbeddedDistiller", "die_with_parent"]

log = logging.getLogger("flywheel.distiller")


class EmbeddedDistiller:
    """The distiller inside `flywheel serve` (embedded mode: this process owns the store)."""

    def __init__(
        self,
        store: Store,
        policies: Callable[[], PolicySet],
        model_dir: Path,
        interval_s: float,
        backend: BackendConfig | None = None,
        leases: Leases | None = None,
    ) -> None:
        import threading

        config = backend or BackendConfig()
        self.policies = policies
        self.interval_s = interval_s
        self.last: list[dict[str, Any]] = []
        self.ctx = TrainingContext(
            store, make_backend(config), config, model_dir, leases, store_url=config.model_store
        )
        self._thread = threading.Thread(target=self._loop, name="distiller", daemon=True)

    def start(self) -> None:
        if isinstance(self.ctx.backend, LocalBackend):
            self.ctx.backend.start()  # the warm worker imports while traffic arrives
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and any training in flight (a run that is cut short is retried on
        the next start: its dataset is unchanged)."""
        self.ctx.stop.set()
        self.ctx.backend.close()

    def run_once(self) -> list[dict[str, Any]]:
        self.last = distill_pass(self.ctx, self.policies())
        return self.last

    def _loop(self) -> None:
        while not self.ctx.stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("distiller pass failed; retrying next interval")
