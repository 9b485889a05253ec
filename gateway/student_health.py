"""Whether each serving student answers: its calls on the user path, per (route, candidate).

Invariant: a candidate is unhealthy from its first `404` (its model is not loaded where its
endpoint says) or its `FAILURES_TO_MARK`-th failure in a row, until its next answer; every
change shows at once in `/healthz` (`students`, status `degraded`), in `/metrics`
(`flywheel_student_healthy`, `flywheel_student_errors`) and on the Candidates view. Rows say
why on their own (`route_reason`: `fallback: student error 404`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

FAILURES_TO_MARK = 3


@dataclass
class _Record:
    failures: int = 0  # in a row
    healthy: bool = True
    last_error: str = ""
    last_error_at: float = 0.0
    unhealthy_since: float = 0.0


@dataclass
class StudentHealth:
    healthy_gauge: Gauge
    errors: Counter
    _records: dict[tuple[str, str], _Record] = field(default_factory=dict)

    def failed(self, route: str, candidate: str, status: int | None, error: str) -> None:
        rec = self._records.setdefault((route, candidate), _Record())
        rec.failures += 1
        rec.last_error, rec.last_error_at = error, time.time()
        self.errors.labels(route, candidate).inc()
        if rec.healthy and (status == 404 or rec.failures >= FAILURES_TO_MARK):
            rec.healthy, rec.unhealthy_since = False, rec.last_error_at
            self.healthy_gauge.labels(route, candidate).set(0)

    def answered(self, route: str, candidate: str) -> None:
        rec = self._records.get((route, candidate))
        if rec is None:
            rec = self._records[(route, candidate)] = _Record()
            self.healthy_gauge.labels(route, candidate).set(1)
        elif rec.failures or not rec.healthy:
            rec.failures, rec.healthy = 0, True
            self.healthy_gauge.labels(route, candidate).set(1)

    def unhealthy(self) -> bool:
        return any(not r.healthy for r in self._records.values())

    def view(self, route: str, candidate: str) -> dict[str, Any]:
        """What the Candidates view shows: `serving` is `ok`, `unhealthy` or `` (no calls
        since this gateway started)."""
        rec = self._records.get((route, candidate))
        if rec is None:
            return {"serving": "", "serving_error": ""}
        return {
            "serving": "ok" if rec.healthy else "unhealthy",
            "serving_error": "" if rec.healthy else rec.last_error,
        }

    def report(self) -> dict[str, Any]:
        """`/healthz`'s `students`: each called candidate's health and its last error."""
        return {
            f"{route}/{candidate}": {
                "healthy": rec.healthy,
                "failures_in_a_row": rec.failures,
                "last_error": rec.last_error,
                "unhealthy_since": rec.unhealthy_since or None,
            }
            for (route, candidate), rec in sorted(self._records.items())
        }
