"""Read-only SQL for admins (`flywheel query --url`): the live embedded store read through the
gateway that holds it, bounded in rows and time.

Invariant: only one statement runs, and it cannot write. A SELECT (or WITH) is wrapped as a
subquery under `readonly = 1` in the query's own SETTINGS (a per-query setting: chdb keeps a
`settings=` readonly for the rest of the session, which would stop the gateway's writes);
SHOW, DESCRIBE, EXISTS and EXPLAIN are read-only by themselves. Everything else is refused
before it reaches ClickHouse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from store.client import Store

READ_VERBS = ("select", "with", "show", "describe", "desc", "exists", "explain")
_WRAPPED = ("select", "with")
_FORMAT = re.compile(r"\bformat\s+\w+\s*$", re.IGNORECASE)


class NotReadOnly(ValueError):
    """The SQL is not one read-only statement."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


def statement(sql: str) -> tuple[str, str]:
    """The statement without a trailing `;`, and its verb; `NotReadOnly` for anything else."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise NotReadOnly("empty SQL")
    if ";" in _without_strings(text):
        raise NotReadOnly("one statement at a time (found `;` inside)")
    if _FORMAT.search(text):
        raise NotReadOnly("leave out FORMAT: rows come back as JSON")
    verb = text.split(None, 1)[0].lower()
    if verb not in READ_VERBS:
        raise NotReadOnly(
            f"{verb.upper()} is not read-only: only {', '.join(v.upper() for v in READ_VERBS)}"
        )
    return text, verb


def _without_strings(text: str) -> str:
    return re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)


def read_only_query(store: Store, sql: str, limit: int, timeout_s: float) -> QueryResult:
    text, verb = statement(sql)
    settings = f"readonly = 1, max_execution_time = {max(1, int(timeout_s))}"
    if verb in _WRAPPED:
        # limit + 1 tells a cut result from one that fits exactly.
        text = f"SELECT * FROM ({text}) LIMIT {limit + 1} SETTINGS {settings}"
    columns, rows = store.query_table(text)
    return QueryResult(columns, [list(r) for r in rows[:limit]], len(rows) > limit)
