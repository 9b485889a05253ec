"""Writing candidate states where the distiller writes them, for tests that set the stage."""

from __future__ import annotations

from datetime import UTC, datetime

from distiller.promotion import STATE_COLUMNS
from store import Store


def write_state(
    store: Store,
    route: str,
    candidate: str,
    state: str,
    min_confidence: float | None = None,
    version: str = "v1",
) -> None:
    store.insert_rows(
        "candidate_states",
        [
            [
                route,
                candidate,
                version,
                state,
                datetime.now(UTC),
                "set by the test",
                "",
                min_confidence,
            ]
        ],
        STATE_COLUMNS,
    )
