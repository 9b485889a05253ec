"""One ClickHouse client for both backends.

`chdb:///path` opens the embedded engine in this process (one process owns a path at a time,
and one path per process); `http(s)://host:8123/db` talks to a server or cluster. Both go
through clickhouse-connect, so the SQL and the insert path are the same.

Invariant: every call holds `_lock`; the embedded engine's single connection is never used
from two threads at once, and a `Store` that lost its server reconnects on the next call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client


class StoreUnavailable(Exception):
    """ClickHouse could not be reached or refused the operation."""


class Store:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._schema_ready = False

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    def _connect(self) -> Client:
        if self._client is None:
            try:
                self._client = clickhouse_connect.get_client(dsn=self.dsn)
            except Exception as e:  # driver raises several types; callers need one
                raise StoreUnavailable(f"cannot open ClickHouse at {self.dsn}: {e}") from e
        return self._client

    def _call(self, fn_name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            client = self._connect()
            try:
                return getattr(client, fn_name)(*args, **kwargs)
            except Exception as e:
                if not self.embedded:
                    # A dead HTTP connection is rebuilt on the next call.
                    self._client = None
                raise StoreUnavailable(str(e)) from e

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._call("command", sql, parameters=parameters)

    def query_rows(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        result = self._call("query", sql, parameters=parameters)
        return list(result.result_rows)

    def query_dicts(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        result = self._call("query", sql, parameters=parameters)
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def ensure_schema(self) -> None:
        """Apply migrations once per process; a server that was down at start gets its
        schema on the first call that reaches it."""
        if not self._schema_ready:
            from flywheel.store.migrations import apply_migrations

            apply_migrations(self)
            self._schema_ready = True

    def insert_json_rows(self, table: str, body: bytes, dedup_token: str) -> None:
        """Insert newline-separated JSON objects. The token makes a retried batch idempotent
        (tables set `non_replicated_deduplication_window`; replicated ones dedup natively)."""
        self.ensure_schema()
        self._call(
            "raw_insert",
            table,
            None,
            insert_block=body,
            fmt="JSONEachRow",
            settings={"insert_deduplication_token": dedup_token},
        )

    def insert_rows(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]
    ) -> None:
        self._call("insert", table, list(rows), column_names=list(columns))

    def ping(self) -> bool:
        try:
            self.query_rows("SELECT 1")
            return True
        except StoreUnavailable:
            return False

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None


def open_store(dsn: str, migrate: bool = True) -> Store:
    """A store with the schema applied. With `migrate`, an unreachable server raises."""
    store = Store(dsn)
    if migrate:
        store.ensure_schema()
    return store
