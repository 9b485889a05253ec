"""Training runs as the dashboard, the admin API and `flywheel distill --status` show them:
each run's latest row (its state and progress), newest first.

`training_runs` holds a row per state change and progress report of a run; this is the one
query that folds them, shared by the gateway and the CLI.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from store.client import Store

_LATEST = """
SELECT run_id, route, candidate, dataset_id, backend, attempt, status, stage, step,
       total_steps, loss, tokens_per_s, seconds, error, holder, created_at, updated_at
FROM training_runs
WHERE ({route:String} = '' OR route = {route:String})
ORDER BY updated_at DESC
LIMIT 1 BY run_id
LIMIT {n:UInt32}
"""


def latest_runs(store: Store, route: str = "", limit: int = 50) -> list[dict[str, Any]]:
    rows = store.query_dicts(_LATEST, {"route": route, "n": limit})
    for r in rows:
        for key in ("created_at", "updated_at"):
            r[key] = r[key].replace(tzinfo=UTC).isoformat()
        total = int(r["total_steps"] or 0)
        r["progress_pct"] = round(100 * int(r["step"]) / total, 1) if total else None
    return rows
