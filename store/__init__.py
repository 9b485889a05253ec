"""The ClickHouse store: one client factory, the migrations, the schema in one place."""

from store.client import Store, StoreProcess, StoreUnavailable, open_store

__all__ = ["Store", "StoreProcess", "StoreUnavailable", "open_store", "server_store"]


def server_store(dsn: str) -> Store:
    """The store for a long-running server: chdb in a child process, a server directly."""
    return StoreProcess(dsn) if dsn.startswith("chdb:") else Store(dsn)
