"""The ClickHouse store: one client factory, the migrations, the schema in one place."""

from flywheel.store.client import Store, StoreUnavailable, open_store

__all__ = ["Store", "StoreUnavailable", "open_store"]
