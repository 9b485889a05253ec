"""A run's progress while it runs: its stage (features: a frozen encoder reading the
examples; train; evaluate), step, total, latest loss and tokens/s, in
`<run dir>/progress.json`, for whoever watches: the distiller turns it into `training_runs`
rows while the job runs; the demo's screen shows it.

Training and evaluation run in a subprocess (or on another machine); a small file beside
their artifacts is the one channel every backend shares.

Invariant: the file is replaced whole (written aside, then renamed), so a reader sees one
complete report or the previous one, and writing never slows a step by more than a rename
every half second.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Stage = Literal["features", "train", "evaluate"]
FILE = "progress.json"


@dataclass
class RunProgress:
    run_dir: Path
    every_s: float = 0.5
    _last: float = field(default=0.0, repr=False)

    def report(
        self,
        stage: Stage,
        step: int,
        total: int,
        loss: float | None = None,
        force: bool = False,
        tokens_per_s: float | None = None,
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / f".{FILE}.{os.getpid()}"
        tmp.write_text(
            json.dumps(
                {
                    "stage": stage,
                    "step": step,
                    "total": total,
                    "loss": loss,
                    "tokens_per_s": tokens_per_s,
                    "pid": os.getpid(),  # the process doing the work (wherever it runs)
                    "at": time.time(),
                }
            )
        )
        tmp.replace(self.run_dir / FILE)


def latest(runs: Path) -> dict[str, Any] | None:
    """The newest report of any run under `runs` (`<route>/<candidate>`), if any."""
    found = sorted(runs.glob(f"*/{FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        return None
    try:
        report: dict[str, Any] = json.loads(found[-1].read_text())
    except (OSError, ValueError):
        return None
    return report
