"""One ClickHouse client for both backends.

`chdb:///path` opens the embedded engine in this process (one process owns a path at a time,
and one path per process); `http(s)://host:8123/db` talks to a server or cluster. Both go
through clickhouse-connect, so the SQL and the insert path are the same.

Invariant: every call holds `_lock`; the embedded engine's single connection is never used
from two threads at once, and a `Store` that lost its server reconnects on the next call.
Every call is bounded by `timeout_s` (waiting for the lock included): a ClickHouse that
hangs raises `StoreUnavailable` like one that refuses, so rows wait in the journal and
reads answer 503 instead of hanging with it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from store.migrations import apply_migrations


class StoreUnavailable(Exception):
    """ClickHouse could not be reached or refused the operation."""


DEFAULT_TIMEOUT_S = 15.0


class Store:
    def __init__(self, dsn: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._schema_ready = False

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    def _connect(self) -> Client:
        if self._client is None:
            try:
                timeouts: dict[str, Any] = {}
                if not self.embedded:
                    timeouts["connect_timeout"] = min(self.timeout_s, 10.0)
                    timeouts["send_receive_timeout"] = self.timeout_s
                self._client = clickhouse_connect.get_client(dsn=self.dsn, **timeouts)
            except Exception as e:  # driver raises several types; callers need one
                raise StoreUnavailable(f"cannot open ClickHouse at {self.dsn}: {e}") from e
        return self._client

    def _acquire(self, timeout: float) -> None:
        if not self._lock.acquire(timeout=timeout):
            raise StoreUnavailable(
                f"ClickHouse is busy: no answer to an earlier call in {timeout:g} s"
            )

    def _call(self, fn_name: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        self._acquire(timeout or self.timeout_s)
        try:
            client = self._connect()
            try:
                return getattr(client, fn_name)(*args, **kwargs)
            except Exception as e:
                if not self.embedded:
                    # A dead HTTP connection is rebuilt on the next call.
                    self._client = None
                raise StoreUnavailable(str(e)) from e
        finally:
            self._lock.release()

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._call("command", sql, parameters=parameters)

    def query_rows(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        result = self._call("query", sql, parameters=parameters)
        return list(result.result_rows)

    def query_table(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows, in the query's order."""
        result = self._call("query", sql, parameters=parameters)
        return list(result.column_names), list(result.result_rows)

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
            settings={
                "insert_deduplication_token": dedup_token,
                # The rollups behind the dashboard drop a replayed batch as the table does.
                "deduplicate_blocks_in_dependent_materialized_views": 1,
            },
        )

    def insert_rows(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]
    ) -> None:
        self._call("insert", table, list(rows), column_names=list(columns))

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            self._call("query", "SELECT 1", timeout=timeout)
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


def open_store(dsn: str, migrate: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S) -> Store:
    """A store with the schema applied. With `migrate`, an unreachable server raises."""
    store = Store(dsn, timeout_s)
    if migrate:
        store.ensure_schema()
    return store


class StoreProcess(Store):
    """The embedded engine in a child process, for a server process with a hot event loop.

    chdb holds the GIL for a whole insert (measured: ~7 ms for 200 rows), which would stall
    the event loop. The child owns the chdb path, runs at the normal CPU priority (never the
    idle class: it must progress on a busy machine), and answers the same calls over a
    pipe. A dead child is restarted on the
    next call; calls made while it is down raise `StoreUnavailable` (rows then wait in the journal).
    """

    def __init__(self, dsn: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(dsn, timeout_s)
        import multiprocessing

        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=_serve_store, args=(self.dsn, child), name="flywheel-store", daemon=True
        )
        self._proc.start()
        child.close()
        self._conn = parent

    def _call(self, fn_name: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        timeout = timeout or self.timeout_s
        self._acquire(timeout)
        try:
            if self._proc is None or not self._proc.is_alive():
                self._start()
            try:
                self._conn.send((fn_name, args, kwargs))
                if not self._conn.poll(timeout):
                    # Stopped, deadlocked or swamped: a hung store is a refusing one. The
                    # child is killed (it may hold the chdb path) and the next call starts
                    # a fresh one; ClickHouse's parts survive a kill.
                    self._kill()
                    raise StoreUnavailable(
                        f"ClickHouse did not answer within {timeout:g} s; its process was restarted"
                    )
                ok, result = self._conn.recv()
            except (EOFError, OSError) as e:
                self._proc = None
                raise StoreUnavailable(f"store process died: {e}") from e
        finally:
            self._lock.release()
        if not ok:
            raise StoreUnavailable(result)
        return result

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.join(10)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        if not self._lock.acquire(timeout=self.timeout_s):
            self._kill()  # a call is stuck in a hung store: do not wait for it
            return
        try:
            if self._proc is not None and self._proc.is_alive():
                try:
                    self._conn.send(("__close__", (), {}))
                    if self._conn.poll(self.timeout_s):
                        self._conn.recv()
                except (EOFError, OSError):
                    pass
                self._proc.join(self.timeout_s)
                if self._proc.is_alive():
                    self._kill()
            self._proc = None
        finally:
            self._lock.release()


@dataclass
class _Rows:
    column_names: list[str]
    result_rows: list[tuple[Any, ...]]


def answer(store: Store, fn_name: str, args: Any, kwargs: Any) -> tuple[bool, Any]:
    """A forwarded call's reply, picklable: (True, result) or (False, the error's text)."""
    try:
        result = store._call(fn_name, *args, **kwargs)
    except Exception as e:
        return False, str(e)
    if hasattr(result, "result_rows"):  # QueryResult does not pickle
        result = _Rows(list(result.column_names), list(result.result_rows))
    return True, result


def _serve_store(dsn: str, conn: Any) -> None:
    # At the normal CPU priority: seen, under SCHED_IDLE two CPU-bound neighbours starved
    # the store entirely and the gateway hung at start; at nice 5 rows landed a minute late.
    # Being its own process is what keeps chdb's GIL off the gateway's event loop.
    store = Store(dsn)
    while True:
        try:
            fn_name, args, kwargs = conn.recv()
        except (EOFError, OSError):
            break
        if fn_name == "__close__":
            store.close()
            conn.send((True, None))
            break
        conn.send(answer(store, fn_name, args, kwargs))
    store.close()
