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
import queue
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import orjson

from flywheel.store import Store
from gateway.config import LogConfig
from gateway.metrics import GatewayMetrics
from gateway.pricing import Price
from gateway.request_log import RequestRecord
from gateway.spool import Spool

log = logging.getLogger("flywheel.log_writer")

_STOP = object()
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
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.queue_max_rows)
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._recent: OrderedDict[str, str] = OrderedDict()  # request id -> app
        self._healthy = True
        self._last_replay = 0.0
        metrics.log_queue_depth.set_function(self._queue.qsize)

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
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            # Overload: spill straight to disk rather than block the loop or drop the row.
            self._spool_batch([item])

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Flush everything queued (and try the spool once more), then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty and the last batch written (tests, admin)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    # --- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self.config.replay_interval_s)
            except queue.Empty:
                self._maybe_replay()
                continue
            batch: list[tuple[str, Any]] = []
            if first is _STOP:
                stopping = True
            else:
                batch.append(first)
            deadline = time.monotonic() + self.config.flush_interval_s
            while len(batch) < self.config.batch_rows:
                if stopping:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stopping = True
                    self._queue.task_done()
                    continue
                batch.append(item)
            try:
                if batch:
                    self._write(batch)
                self._maybe_replay(force=stopping)
            finally:
                for _ in range(len(batch) + (1 if first is _STOP else 0)):
                    self._queue.task_done()

    def _rows_by_table(self, batch: list[tuple[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        tables: dict[str, list[dict[str, Any]]] = {}
        for table, item in batch:
            if isinstance(item, RequestRecord):
                row = self._finalise(item)
            else:
                row = item
            tables.setdefault(table, []).append(row)
        return tables

    def _finalise(self, record: RequestRecord) -> dict[str, Any]:
        try:
            row = record.to_row(self.prices)
        except Exception as e:  # a malformed upstream body must not lose the row
            log.exception("could not finalise row %s", record.request_id)
            record.response, record.events = None, None
            record.error = (record.error + f"; log finalise failed: {e}").strip("; ")
            row = record.to_row(self.prices)
        m = self.metrics
        m.tokens.labels("input", row["served_model"]).inc(row["input_tokens"])
        m.tokens.labels("output", row["served_model"]).inc(row["output_tokens"])
        m.cost.labels(row["served_model"]).inc(float(row["cost_usd"]))
        return row

    def _write(self, batch: list[tuple[str, Any]]) -> None:
        for table, rows in self._rows_by_table(batch).items():
            body = b"\n".join(orjson.dumps(r) for r in rows)
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
            self.spool.append(table, uuid.uuid4().hex, b"\n".join(orjson.dumps(r) for r in rows))
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
