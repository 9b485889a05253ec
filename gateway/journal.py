"""The request log's durable path: an append-only local journal of finished rows.

A row is one `write(2)` of `<table>\\t<json>\\n`, made on the event loop before the answer
leaves the gateway. A process that dies at any instant after that (kill -9, OOM) leaves the
row in the kernel's page cache and so on disk; `fsync_interval_s` bounds what a crash of
the whole machine can lose. The log writer's thread tails the journal and inserts its rows
into ClickHouse; a segment is deleted only once every row in it was acknowledged.

Replay is idempotent: before inserting the rows in bytes [a, b) of a segment, the writer
records (a, b) in the segment's `.batch` file and derives each insert's dedup token from
(segment, a, b, table). A restart re-inserts the last recorded batch with the same bounds
and tokens (a no-op where ClickHouse already has it), then goes on from b. Segment names
are unique (a timestamp and random bytes), so no two batches ever share a token.

Invariant: a row the loop appended is in a segment file until ClickHouse took it; one
process owns a journal directory at a time (an exclusive `flock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

_SUFFIX = ".log"
_READ_CHUNK = 8 * 1024 * 1024
_BATCH_RECORD = 48  # bytes: two offsets, space-padded


class JournalUnavailable(Exception):
    """The journal cannot take a row (disk full, file too large, read-only, ...)."""


@dataclass(slots=True, eq=False)
class Segment:
    name: str
    path: Path
    end: int  # bytes of complete rows; grows while this is the active segment
    rows: int  # rows in it (for the backlog figure)
    sealed: bool  # no more appends: it may be deleted once read to its end


class Journal:
    def __init__(
        self, directory: Path, segment_bytes: int = 16 << 20, retry_s: float = 1.0
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.retry_s = retry_s
        self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(self._lock_fd)
            raise JournalUnavailable(f"{self.dir} is in use by another gateway process") from e
        # deque append/popleft are atomic under the GIL: the loop appends, the thread reads.
        self.segments: deque[Segment] = deque(self._recover())
        self._fd = -1
        self._active: Segment | None = None
        self.error = ""  # why the last append failed; "" while appends succeed
        self._failed_at = 0.0
        self.appended_rows = 0
        self.acked_rows = 0
        self._head_acked = 0  # rows of the oldest segment already in ClickHouse
        self._unsynced = False
        self._rotate_wanted = False  # set by the thread, acted on by the loop

    def _recover(self) -> list[Segment]:
        """Segments a previous process left (it crashed, or ClickHouse was down): whole
        rows only; a torn last line (the write that was cut short) is dropped."""
        found = []
        for path in sorted(self.dir.glob(f"*{_SUFFIX}")):
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                with open(path, "r+b") as f:
                    f.truncate(end)
            found.append(Segment(path.stem, path, end, data.count(b"\n"), sealed=True))
        return found

    @property
    def backlog_rows(self) -> int:
        return sum(s.rows for s in self.segments) - self._head_acked

    @property
    def writable(self) -> bool:
        """False after a failed append, until `retry_s` has passed or space was freed."""
        return not self.error or time.monotonic() - self._failed_at >= self.retry_s

    # --- the event loop ----------------------------------------------------------------

    def append(self, table: str, row: bytes) -> None:
        """Write one row; raises JournalUnavailable (and writes nothing) when it cannot."""
        if not self.writable:
            raise JournalUnavailable(self.error)
        data = b"%s\t%s\n" % (table.encode(), row)
        try:
            seg = self._active
            if seg is None or seg.end >= self.segment_bytes or self._rotate_wanted:
                seg = self._rotate()
            start = seg.end
            written = 0
            try:
                while written < len(data):
                    written += os.write(self._fd, data[written:])
            except OSError:
                if written:  # never leave a torn row for the reader
                    os.ftruncate(self._fd, start)
                    os.lseek(self._fd, start, os.SEEK_SET)
                raise
        except OSError as e:
            self.error = f"cannot write the request journal in {self.dir}: {e.strerror or e}"
            self._failed_at = time.monotonic()
            # Seal the segment now: once the writer has its rows in ClickHouse it deletes
            # it, which frees the space, and the next try starts a new one.
            self._seal_active()
            raise JournalUnavailable(self.error) from e
        self.error = ""
        seg.rows += 1
        seg.end = start + len(data)  # the reader reads up to here
        self.appended_rows += 1
        self._unsynced = True

    def _rotate(self) -> Segment:
        """Seal the active segment (on the loop, between appends, so its end is final)
        and open a new one. The old one is sealed first, even if opening the new one
        fails: on a full disk, sealing is what lets the writer delete it and free space."""
        self._seal_active()
        name = f"{time.time_ns():020d}-{os.urandom(3).hex()}"
        path = self.dir / f"{name}{_SUFFIX}"
        # The batch record is written now, while there is room: on a full disk the writer
        # must still be able to record its batches (overwritten in place), or it could
        # never drain the journal and free the space.
        path.with_suffix(".batch").write_bytes(b" " * _BATCH_RECORD)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._rotate_wanted = False
        self._active = Segment(name, path, 0, 0, sealed=False)
        self.segments.append(self._active)
        return self._active

    def _seal_active(self) -> None:
        if self._active is not None:
            self._active.sealed = True
            self._active = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # --- the writer thread -------------------------------------------------------------

    def head(self) -> Segment | None:
        return self.segments[0] if self.segments else None

    def read(self, seg: Segment, offset: int, max_rows: int) -> tuple[list[bytes], int]:
        """Whole rows from `offset` (at most `max_rows`) and the offset after them."""
        end = seg.end
        if offset >= end:
            return [], offset
        with open(seg.path, "rb") as f:
            data = os.pread(f.fileno(), min(end - offset, _READ_CHUNK), offset)
        lines = data.split(b"\n")
        lines.pop()  # after the last newline: empty, or a row cut by the chunk size
        rows = lines[:max_rows]
        return rows, offset + sum(len(r) + 1 for r in rows)

    def read_range(self, seg: Segment, start: int, stop: int) -> list[bytes]:
        with open(seg.path, "rb") as f:
            data = os.pread(f.fileno(), stop - start, start)
        return data.split(b"\n")[:-1]

    def mark_batch(self, seg: Segment, start: int, stop: int) -> None:
        """Record the bounds of the batch about to be inserted (see the module docstring)."""
        record = b"%d %d" % (start, stop)
        fd = os.open(seg.path.with_suffix(".batch"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, record.ljust(_BATCH_RECORD), 0)  # in place: needs no new space
        finally:
            os.close(fd)

    def last_batch(self, seg: Segment) -> tuple[int, int] | None:
        try:
            start, stop = seg.path.with_suffix(".batch").read_bytes().split()
        except (OSError, ValueError):
            return None
        return int(start), int(stop)

    def acked(self, rows: int) -> None:
        self._head_acked += rows
        self.acked_rows += rows

    def retire(self, seg: Segment) -> None:
        """Delete a sealed segment whose rows are all in ClickHouse; freed space lets a
        journal that was full take rows again."""
        assert seg.sealed and self.segments[0] is seg
        self.segments.popleft()
        self._head_acked = 0
        for path in (seg.path, seg.path.with_suffix(".batch")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.error = ""

    def rotate_if_drained(self, seg: Segment, offset: int) -> None:
        """Ask the loop to start a new segment at its next append once the active one was
        read to its end, so an idle gateway does not keep a large file of old rows."""
        if not seg.sealed and offset == seg.end and seg.end >= self.segment_bytes // 16:
            self._rotate_wanted = True

    def sync(self) -> None:
        if self._unsynced and self._fd >= 0:
            self._unsynced = False
            with contextlib.suppress(OSError):
                os.fsync(self._fd)

    def close(self) -> None:
        """Close the active segment; when every row is in ClickHouse (a clean stop), remove
        the segments too, so the next start has nothing to replay and says nothing of it."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self.backlog_rows == 0:
            while self.segments:
                seg = self.segments.popleft()
                for path in (seg.path, seg.path.with_suffix(".batch")):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            self._head_acked = 0
        os.close(self._lock_fd)
