"""Moves request rows from the hot path into ClickHouse without ever slowing it down.

The event loop only `put_nowait`s a record on a bounded queue. One writer thread batches
(size and time bounds), finalises rows (pricing, stream assembly), and inserts them as one
JSONEachRow body with a dedup token. A batch ClickHouse refuses goes to the spool and is
replayed when ClickHouse answers again; a full queue also spills to the spool.

Invariant: every submitted row ends in ClickHouse or in the spool; `close()` drains the queue
before returning (SIGTERM flushes), so a request the gateway answered is never lost.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from typing import Any

import orjson

from contracts.pricing import Price
from gateway.config import LogConfig
from gateway.metrics import GatewayMetrics
from gateway.request_log import RequestRecord
from gateway.spool import Spool
from store import Store

log = logging.getLogger("flywheel.log_writer")

_RECENT_IDS = 200_000


class LogWriter:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        prices: dict[str, Price],
        config: LogConfig,
        metrics: GatewayMetrics,
    ) -> None:
        self.store = store
        self.spool = spool
        self.prices = prices
        self.config = config
        self.metrics = metrics
        # deque append/popleft are atomic under the GIL: the loop never takes a lock.
        self._queue: deque[tuple[str, Any]] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._in_flight = 0
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._recent: OrderedDict[str, str] = OrderedDict()  # request id -> app
        self._healthy = True
        self._last_replay = 0.0
        metrics.log_queue_depth.set_function(lambda: len(self._queue))

    # --- called from the event loop --------------------------------------------------------

    def submit(self, record: RequestRecord) -> None:
        self._recent[record.request_id] = record.app
        if len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        self._put(("requests", record))

    def submit_row(self, table: str, row: dict[str, Any]) -> None:
        self._put((table, row))

    def owner_of(self, request_id: str) -> str | None:
        """The app of a request logged by this process lately (it may not be in ClickHouse
        yet); None when unknown here."""
        return self._recent.get(request_id)

    def _put(self, item: tuple[str, Any]) -> None:
        depth = len(self._queue)
        if depth >= self.config.queue_max_rows:
            # Overload: spill straight to disk rather than block the loop or drop the row.
            self._spool_batch([item])
            return
        self._queue.append(item)
        if depth + 1 >= self.config.batch_rows:
            self._wake.set()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Flush everything queued (and try the spool once more), then stop the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written or spooled (tests, admin)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline:
            if not self._queue and not self._in_flight:
                return True
            time.sleep(0.005)
        return False

    # --- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.config.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            try:
                while self._queue:
                    batch = self._take(self.config.batch_rows)
                    try:
                        self._write(batch)
                    finally:
                        self._in_flight = 0
                self._maybe_replay(force=stopping)
            except Exception:
                # No row, however odd, may stop logging: report it and keep the thread.
                log.exception("log writer pass failed; the writer goes on")
            if stopping:
                return

    def _take(self, limit: int) -> list[tuple[str, Any]]:
        batch: list[tuple[str, Any]] = []
        queue = self._queue
        self._in_flight = 1
        while queue and len(batch) < limit:
            batch.append(queue.popleft())
        return batch

    def _rows_by_table(self, batch: list[tuple[str, Any]]) -> dict[str, list[bytes]]:
        """Each row serialised (JSONEachRow lines), by table."""
        tables: dict[str, list[bytes]] = {}
        for table, item in batch:
            if isinstance(item, RequestRecord):
                line = self._finalise(item)
            else:
                try:
                    line = orjson.dumps(item)
                except (TypeError, orjson.JSONEncodeError):
                    log.exception("dropped an unserialisable %s row", table)
                    continue
            tables.setdefault(table, []).append(line)
        return tables

    def _finalise(self, record: RequestRecord) -> bytes:
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
        m = self.metrics
        m.tokens.labels("input", row["served_model"]).inc(row["input_tokens"])
        m.tokens.labels("output", row["served_model"]).inc(row["output_tokens"])
        m.cost.labels(row["served_model"]).inc(float(row["cost_usd"]))
        return line

    def _write(self, batch: list[tuple[str, Any]]) -> None:
        for table, rows in self._rows_by_table(batch).items():
            body = b"\n".join(rows)
            token = uuid.uuid4().hex
            if self._healthy:
                try:
                    self.store.insert_json_rows(table, body, token)
                    self.metrics.rows_written.labels(table).inc(len(rows))
                    continue
                except Exception as e:
                    log.warning("ClickHouse insert failed, spooling %d rows: %s", len(rows), e)
                    self._healthy = False
            self.spool.append(table, token, body)
            self.metrics.rows_spooled.labels(table).inc(len(rows))

    def _spool_batch(self, batch: list[tuple[str, Any]]) -> None:
        for table, rows in self._rows_by_table(batch).items():
            self.spool.append(table, uuid.uuid4().hex, b"\n".join(rows))
            self.metrics.rows_spooled.labels(table).inc(len(rows))

    def _maybe_replay(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_replay < self.config.replay_interval_s:
            return
        self._last_replay = now
        if not self.spool.has_pending():
            self._healthy = True
            return
        try:
            rows = self.spool.replay(self.store.insert_json_rows)
        except Exception as e:
            log.info("spool replay deferred, ClickHouse still unavailable: %s", e)
            self._healthy = False
            return
        self._healthy = True
        self.metrics.rows_replayed.inc(rows)
        if rows:
            log.warning("replayed %d spooled rows into ClickHouse", rows)
