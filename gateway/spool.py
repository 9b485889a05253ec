"""A durable, append-only local spool for batches ClickHouse did not take.

Each line is one batch: `{"table", "token", "rows"}` where `rows` is the exact
JSONEachRow body that failed and `token` its insert-deduplication token, so a replay that is
interrupted and repeated never inserts a row twice.

Invariant: a batch leaves the spool only after ClickHouse acknowledged it; a crash at any
point leaves each batch either in a spool file or in ClickHouse (possibly both, and then the
token makes the second insert a no-op).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import orjson


class Spool:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.active = self.dir / "spool.jsonl"
        self._lock = threading.Lock()

    def append(self, table: str, token: str, body: bytes) -> None:
        line = orjson.dumps({"table": table, "token": token, "rows": body.decode()}) + b"\n"
        with self._lock, open(self.active, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def pending_files(self) -> list[Path]:
        return sorted(self.dir.glob("*.replaying")) + (
            [self.active] if self.active.exists() and self.active.stat().st_size else []
        )

    def has_pending(self) -> bool:
        return bool(self.pending_files())

    def pending_rows(self) -> int:
        total = 0
        for path in self.pending_files():
            for line in path.read_bytes().splitlines():
                if line.strip():
                    total += orjson.loads(line)["rows"].count("\n") + 1
        return total

    def replay(self, insert: Callable[[str, bytes, str], None]) -> int:
        """Insert spooled batches in order; stop at the first failure (it re-raises).
        Returns the number of rows replayed."""
        with self._lock:
            if self.active.exists() and self.active.stat().st_size:
                # Freeze the current file so new failures append to a fresh one.
                self.active.rename(self.dir / f"{os.getpid()}-{os.urandom(4).hex()}.replaying")
        replayed = 0
        for path in sorted(self.dir.glob("*.replaying")):
            lines = [ln for ln in path.read_bytes().splitlines() if ln.strip()]
            for i, line in enumerate(lines):
                batch = orjson.loads(line)
                try:
                    insert(batch["table"], batch["rows"].encode(), batch["token"])
                except Exception:
                    rest = b"\n".join(lines[i:]) + b"\n"
                    tmp = path.with_suffix(".tmp")
                    tmp.write_bytes(rest)
                    os.replace(tmp, path)
                    raise
                replayed += batch["rows"].count("\n") + 1
            path.unlink()
        return replayed
