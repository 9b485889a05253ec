"""One store shared by several gateway worker processes over a Unix socket.

The embedded engine allows one owning process per path; with `flywheel serve --workers N`
the supervisor owns it (`StoreServer`) and every worker talks to it through `RemoteStore`,
which speaks the same `Store` calls. Each connection is served on its own thread; the
owner's `Store` serialises the calls.

Invariant: a worker's call is bounded by its timeout like any store call; a supervisor that
restarts its server is reached again on the next call, and until then calls raise
`StoreUnavailable` (rows wait in the worker's journal).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from store.client import DEFAULT_TIMEOUT_S, Store, StoreUnavailable, answer

log = logging.getLogger("flywheel.store")


class StoreServer:
    def __init__(self, store: Store, address: str, authkey: bytes) -> None:
        self.store = store
        self._listener = Listener(address, family="AF_UNIX", authkey=authkey)
        self._thread = threading.Thread(target=self._accept, name="store-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except OSError:
                return  # closed
            except Exception:  # a client that failed the handshake: refuse it, go on
                log.warning("store server refused a connection", exc_info=True)
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        with conn:
            while True:
                try:
                    fn_name, args, kwargs = conn.recv()
                except (EOFError, OSError):
                    return
                reply = answer(self.store, fn_name, args, kwargs)
                try:
                    conn.send(reply)
                except (EOFError, OSError):
                    return  # the worker died while its call ran

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()


class RemoteStore(Store):
    def __init__(
        self, dsn: str, address: str, authkey: bytes, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        super().__init__(dsn, timeout_s)
        self._address = address
        self._authkey = authkey
        self._conn: Connection | None = None

    def ensure_schema(self) -> None:
        self._schema_ready = True  # the owner migrated before any worker started

    def _call(self, fn_name: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        timeout = timeout or self.timeout_s
        self._acquire(timeout)
        try:
            try:
                if self._conn is None:
                    self._conn = Client(self._address, family="AF_UNIX", authkey=self._authkey)
                self._conn.send((fn_name, args, kwargs))
                if not self._conn.poll(timeout):
                    self._drop()
                    raise StoreUnavailable(f"the store owner did not answer within {timeout:g} s")
                ok, result = self._conn.recv()
            except (EOFError, OSError) as e:
                self._drop()
                raise StoreUnavailable(f"the store owner is unreachable: {e}") from e
        finally:
            self._lock.release()
        if not ok:
            raise StoreUnavailable(result)
        return result

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop()
