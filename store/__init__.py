"""The ClickHouse store: one client factory, the migrations, the schema in one place."""

from store.client import DEFAULT_TIMEOUT_S, Store, StoreProcess, StoreUnavailable, open_store

__all__ = ["Store", "StoreProcess", "StoreUnavailable", "open_store", "server_store"]


def server_store(dsn: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Store:
    """The store for a long-running server: chdb in a child process, a server directly."""
    return StoreProcess(dsn, timeout_s) if dsn.startswith("chdb:") else Store(dsn, timeout_s)
