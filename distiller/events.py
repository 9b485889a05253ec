"""The `events` table: every change to a candidate, with what, why and the evidence.

Invariant: events are only appended; dashboards and lineage read them in time order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from store import Store

_COLUMNS = [
    "event_id",
    "at",
    "route",
    "candidate",
    "kind",
    "from_state",
    "to_state",
    "reason",
    "evidence",
]


def record_event(
    store: Store,
    route: str,
    candidate: str,
    kind: str,
    reason: str,
    evidence: dict[str, Any],
    from_state: str = "",
    to_state: str = "",
    at: datetime | None = None,
) -> None:
    store.insert_rows(
        "events",
        [
            [
                uuid.uuid4(),
                at or datetime.now(UTC),
                route,
                candidate,
                kind,
                from_state,
                to_state,
                reason,
                orjson.dumps(evidence).decode(),
            ]
        ],
        _COLUMNS,
    )
