"""Versioned schema migrations, applied in order at start on chdb and on a server alike.

Invariant: `schema_migrations` lists exactly the versions whose statements all ran; each
statement is idempotent (`IF NOT EXISTS`), so a run interrupted half-way is safe to repeat.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from typing import Any, Protocol


class _Executor(Protocol):
    """What migrations need of a store (the client module imports this one, not back)."""

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any: ...

    def query_rows(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]: ...

    def insert_rows(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]
    ) -> None: ...


_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    out = []
    for entry in resources.files("store").joinpath("migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(out)


def statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def apply_migrations(store: _Executor) -> list[int]:
    """Apply what is missing; return the versions applied now."""
    store.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = {int(r[0]) for r in store.query_rows("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, sql in available():
        if version in done:
            continue
        for stmt in statements(sql):
            store.command(stmt)
        store.insert_rows("schema_migrations", [[version, name]], ["version", "name"])
        applied.append(version)
    return applied
