"""Moves request rows from the hot path into ClickHouse, durably.

On the event loop, `submit` finalises a row (pricing, stream assembly, masking) and appends
it to the journal (`gateway/journal.py`) before the answer is sent. One writer thread tails
the journal and inserts batches with deterministic dedup tokens; a batch ClickHouse refuses,
or does not answer within the store's timeout, stays in the journal and is retried every
`replay_interval_s` with the same tokens.

When the journal cannot take a row (disk full), the row is kept in a bounded memory queue
that the thread inserts directly, and `refusing` turns true (unless the config says
`when_unrecordable: answer`): the gateway then refuses new requests rather than answer what
it cannot record. With `journal: false` rows only ever wait in memory.

Invariant: a row is in ClickHouse, in the journal, or (journal unavailable) in the memory
queue; the thread's loop survives any row and any exception, and `ensure_running` restarts
it (loudly) should it ever die.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import orjson

from contracts.pricing import Price
from gateway.config import LogConfig
from gateway.journal import Journal, JournalUnavailable, Segment
from gateway.metrics import GatewayMetrics
from gateway.request_log import RequestRecord
from store import Store

log = logging.getLogger("flywheel.log_writer")

_RECENT_IDS = 200_000


class LogWriter:
    def __init__(
        self,
        store: Store,
        journal: Journal | None,
        prices: dict[str, Price],
        config: LogConfig,
        metrics: GatewayMetrics,
    ) -> None:
        self.store = store
        self.journal = journal
        self.prices = prices
        self.config = config
        self.metrics = metrics
        self._memory: deque[tuple[str, bytes]] = deque()  # rows the journal could not take
        self._memory_in = 0
        self._memory_out = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._recent: OrderedDict[str, tuple[str, str]] = OrderedDict()  # id -> (app, route)
        self._healthy = True
        self._last_attempt = 0.0
        self._last_sync = 0.0
        self._since_wake = 0
        self._last_journal_log = -1e9
        self._passes = 0
        self._replayed = 0
        self._segment: Segment | None = None  # the journal segment being read
        self._offset = 0
        # (segment, start, stop) of a batch marked and sent but not acknowledged.
        self._unacked: tuple[Segment, int, int] | None = None
        self._memory_batch: tuple[str, int] | None = None  # (token, rows) being inserted
        self._catching_up = False  # inserting rows that waited through a failure
        self._recovered = journal.backlog_rows if journal is not None else 0
        self._catching_up = bool(self._recovered)
        if self._recovered:
            log.warning(
                "the journal holds %d rows of an earlier run (those ClickHouse already has "
                "are deduplicated); replaying",
                self._recovered,
            )
        metrics.log_queue_depth.set_function(self.backlog_rows)
        metrics.journal_writable.set_function(lambda: 0 if self.refusing else 1)

    # --- called from the event loop ------------------------------------------------------

    def submit(
        self,
        record: RequestRecord,
        unrecordable: Callable[[RequestRecord], None] | None = None,
    ) -> bool:
        """Finalise and record a request's row; False when the journal failed to take it.
        Then `unrecordable` may amend the record (the answer is withheld) before the row is
        kept in memory."""
        self._recent[record.request_id] = (record.app, record.route)
        if len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        line = self._finalise(record)
        if self.journal is None:
            self._remember("requests", line)  # memory only, as configured
            return True
        if self._append("requests", line):
            return True
        if unrecordable is not None:
            unrecordable(record)
            line = self._finalise(record, count=False)
        self._remember("requests", line)
        return False

    def submit_row(self, table: str, row: dict[str, Any]) -> bool:
        try:
            line = orjson.dumps(row)
        except (TypeError, orjson.JSONEncodeError):
            log.exception("dropped an unserialisable %s row", table)
            return False
        if not self._append(table, line):
            self._remember(table, line)
            return False
        return True

    def owner_of(self, request_id: str) -> tuple[str, str] | None:
        """(app, route) of a request logged by this process lately (it may not be in
        ClickHouse yet); None when unknown here."""
        return self._recent.get(request_id)

    @property
    def refusing(self) -> bool:
        """True while rows cannot be made durable and the config says to refuse traffic."""
        j = self.journal
        return j is not None and not j.writable and self.config.when_unrecordable == "refuse"

    @property
    def journal_error(self) -> str:
        return self.journal.error if self.journal is not None else ""

    def backlog_rows(self) -> int:
        """Rows recorded but not yet in ClickHouse."""
        j = self.journal
        return (j.backlog_rows if j is not None else 0) + len(self._memory)

    def _append(self, table: str, line: bytes) -> bool:
        if self.journal is None:
            return False
        try:
            self.journal.append(table, line)
        except JournalUnavailable as e:
            self.metrics.journal_errors.inc()
            self._wake.set()  # drain and delete what is sealed: that frees the space
            now = time.monotonic()
            if now - self._last_journal_log >= 10:  # loud, but not once per request
                self._last_journal_log = now
                log.error("rows kept in memory only: %s", e)
            return False
        self._wake_at_batch()
        return True

    def _remember(self, table: str, line: bytes) -> bool:
        if len(self._memory) >= self.config.queue_max_rows:
            self.metrics.rows_dropped.labels(table).inc()
            log.error("memory queue full (%d rows): a %s row was dropped", len(self._memory), table)
            return False
        self._memory.append((table, line))
        self._memory_in += 1
        self._wake_at_batch()
        return False

    def _wake_at_batch(self) -> None:
        """Wake the writer once a batch has gathered (else its interval wakes it)."""
        self._since_wake += 1
        if self._since_wake >= self.config.batch_rows:
            self._since_wake = 0
            self._wake.set()

    def _finalise(self, record: RequestRecord, count: bool = True) -> bytes:
        try:
            row = record.to_row(self.prices)
            line = orjson.dumps(row)
        except Exception as e:  # a malformed body must not lose the row: keep what serialises
            log.exception("could not finalise row %s", record.request_id)
            record.response, record.events = None, None
            record.request, record.metadata, record.tags = {}, {}, []
            record.guardrails = []
            record.error = (record.error + f"; log finalise failed: {e}").strip("; ")
            row = record.to_row(self.prices)
            line = orjson.dumps(row)
        if not count:
            return line
        m = self.metrics
        m.tokens.labels("input", row["served_model"]).inc(row["input_tokens"])
        m.tokens.labels("output", row["served_model"]).inc(row["output_tokens"])
        m.cost.labels(row["served_model"]).inc(float(row["cost_usd"]))
        return line

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def ensure_running(self) -> None:
        """Restart the writer thread if it died (it should not: its loop catches all)."""
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            log.error("the log writer thread had stopped; restarting it")
            self.metrics.thread_restarts.labels("log-writer").inc()
            self.start()

    def close(self, timeout: float = 30.0) -> None:
        """One last pass (rows ClickHouse does not take stay in the journal for the next
        start), then stop the thread and close the journal."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        if self.journal is not None:
            self.journal.close()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row submitted so far is in ClickHouse (tests, admin); False
        when ClickHouse refused them (they wait in the journal) or time ran out."""
        j = self.journal
        target = self._recovered + j.appended_rows if j is not None else 0
        memory_target = self._memory_in
        passes = self._passes
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline:
            if (j is None or j.acked_rows >= target) and self._memory_out >= memory_target:
                return True
            if not self._healthy and self._passes >= passes + 2:
                return False
            self._wake.set()
            time.sleep(0.005)
        return False

    # --- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.config.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            try:
                now = time.monotonic()
                if (
                    self._healthy
                    or stopping
                    or now - self._last_attempt >= (self.config.replay_interval_s)
                ):
                    self._last_attempt = now
                    if self._drain_memory():
                        if self.journal is None:
                            self._caught_up()
                        else:
                            self._drain_journal(self.journal)
                if self.journal is not None and (
                    stopping or now - self._last_sync >= self.config.fsync_interval_s
                ):
                    self._last_sync = now
                    self.journal.sync()
            except Exception:
                # No row, however odd, may stop logging: report it and keep the thread.
                log.exception("log writer pass failed; the writer goes on")
            self._passes += 1
            if stopping:
                return

    def _drain_memory(self) -> bool:
        while self._memory:
            if self._memory_batch is None:  # a retried batch keeps its rows and token
                self._memory_batch = (f"mem-{uuid.uuid4().hex}", min(len(self._memory), 2000))
            token, size = self._memory_batch
            if not self._insert([self._memory[i] for i in range(size)], token):
                return False
            for _ in range(size):
                self._memory.popleft()
            self._memory_out += size
            self._memory_batch = None
        return True

    def _drain_journal(self, j: Journal) -> None:
        while (seg := j.head()) is not None:
            if self._segment is not seg:
                self._segment, self._offset = seg, 0
                last = j.last_batch(seg)
                if last is not None:
                    # A previous process may have died inside this insert: the rows before
                    # it are in ClickHouse, and it is repeated below with the same bounds
                    # and token, which ClickHouse dedups if it had it.
                    start, stop = last
                    j.acked(len(j.read_range(seg, 0, start)))
                    self._offset = start
                    self._unacked = (seg, start, stop)
            if self._unacked is not None and self._unacked[0] is seg:
                # The last insert failed, and may have landed (a timeout after ClickHouse
                # took it): the same bounds and token again, never a longer batch under a
                # new token, which would write its first rows twice.
                stop = self._unacked[2]
                rows = j.read_range(seg, self._offset, stop)
            else:
                sealed = seg.sealed  # read before the rows: a sealed segment's end is final
                rows, stop = j.read(seg, self._offset, self.config.batch_rows)
                if not rows:
                    if not sealed:
                        j.rotate_if_drained(seg, self._offset)
                        self._caught_up()
                        return
                    j.retire(seg)
                    self._segment = None
                    continue
                j.mark_batch(seg, self._offset, stop)
                self._unacked = (seg, self._offset, stop)
            if not self._insert_journal(j, seg, self._offset, stop, rows):
                return
            self._unacked = None
            j.acked(len(rows))
            self._offset = stop

    def _caught_up(self) -> None:
        if self._catching_up:
            log.warning("ClickHouse caught up: replayed %d rows that waited", self._replayed)
            self._catching_up, self._replayed = False, 0

    def _insert_journal(
        self, j: Journal, seg: Segment, start: int, stop: int, lines: list[bytes]
    ) -> bool:
        rows = []
        for line in lines:
            table, _, row = line.partition(b"\t")
            rows.append((table.decode(), row))
        return self._insert(rows, f"{seg.name}:{start}:{stop}")

    def _insert(self, rows: list[tuple[str, bytes]], token: str) -> bool:
        """Insert rows by table, each table's block with its own token derived from
        `token`; False (and nothing lost) when ClickHouse refused or hung."""
        tables: dict[str, list[bytes]] = {}
        for table, row in rows:
            tables.setdefault(table, []).append(row)
        for table, lines in tables.items():
            block_token = f"{token}:{table}"
            try:
                self.store.insert_json_rows(table, b"\n".join(lines), block_token)
            except Exception as e:
                if self._healthy:
                    log.warning("ClickHouse insert failed, rows wait in the journal: %s", e)
                self._healthy = False
                self._catching_up = True
                self.metrics.insert_failures.inc()
                return False
            self.metrics.rows_written.labels(table).inc(len(lines))
            if self._catching_up:
                self._replayed += len(lines)
                self.metrics.rows_replayed.inc(len(lines))
        self._healthy = True
        return True
