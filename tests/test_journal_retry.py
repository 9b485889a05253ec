"""A batch ClickHouse took but did not acknowledge (a timeout after the insert landed) is
retried with the same rows and the same dedup token, even when more rows reached the
journal meanwhile: a longer batch under a new token would write the first rows twice."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson

from gateway.config import LogConfig
from gateway.journal import Journal
from gateway.log_writer import LogWriter
from gateway.metrics import GatewayMetrics
from store import Store
from tests.support.gateway import RunningGateway


class LandsThenTimesOut:
    """The real store, whose first insert lands in ClickHouse and then reports a timeout,
    as a call whose answer was lost does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failures_left = 1
        self.tokens: list[str] = []

    def insert_json_rows(self, table: str, body: bytes, dedup_token: str) -> None:
        self.tokens.append(dedup_token)
        self.store.insert_json_rows(table, body, dedup_token)
        if self.failures_left:
            self.failures_left -= 1
            raise TimeoutError("ClickHouse did not answer within 5 s")


def _rows(n: int, route: str) -> list[bytes]:
    return [orjson.dumps({"request_id": str(uuid.uuid4()), "route": route}) for _ in range(n)]


def _counts(store: Store, route: str) -> tuple[int, int]:
    count, unique = store.query_rows(
        "SELECT count(), uniqExact(request_id) FROM requests WHERE route = {r:String}",
        {"r": route},
    )[0]
    return int(count), int(unique)


def test_a_timed_out_batch_is_retried_whole_not_grown(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    store, route = gateway.state.store, f"retry-{uuid.uuid4().hex[:8]}"  # chdb: one path
    flaky = LandsThenTimesOut(store)
    journal = Journal(tmp_path / "journal")
    writer = LogWriter(flaky, journal, {}, LogConfig(), GatewayMetrics())  # type: ignore[arg-type]
    first, later = _rows(5, route), _rows(7, route)
    for row in first:
        journal.append("requests", row)
    writer._drain_journal(journal)  # lands, then "times out": the rows stay in the journal
    assert journal.backlog_rows == 5 and len(flaky.tokens) == 1
    for row in later:  # traffic goes on before the retry
        journal.append("requests", row)
    writer._drain_journal(journal)
    assert journal.backlog_rows == 0
    # The retry repeated the first batch under its token, then sent the rest as a new one.
    assert flaky.tokens[1] == flaky.tokens[0] and len(set(flaky.tokens)) == 2
    assert _counts(store, route) == (12, 12)
    journal.close()


def test_a_restart_repeats_the_batch_it_died_in_even_when_that_retry_fails(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """The process died inside an insert that landed, with more rows after it; the next one
    repeats that batch, times out once more, and retries it again under the same token
    before the rows after it."""
    store, route = gateway.state.store, f"restart-{uuid.uuid4().hex[:8]}"
    flaky = LandsThenTimesOut(store)
    journal = Journal(tmp_path / "journal")
    writer = LogWriter(flaky, journal, {}, LogConfig(), GatewayMetrics())  # type: ignore[arg-type]
    for row in _rows(5, route):
        journal.append("requests", row)
    writer._drain_journal(journal)  # landed, never acknowledged
    for row in _rows(7, route):  # more rows in the same segment, then the process is gone
        journal.append("requests", row)
    journal.close()

    journal = Journal(tmp_path / "journal")
    flaky.failures_left = 1
    writer = LogWriter(flaky, journal, {}, LogConfig(), GatewayMetrics())  # type: ignore[arg-type]
    writer._drain_journal(journal)  # the repeat lands and times out too
    writer._drain_journal(journal)
    assert flaky.tokens[0] == flaky.tokens[1] == flaky.tokens[2] and len(set(flaky.tokens)) == 2
    assert _counts(store, route) == (12, 12) and journal.backlog_rows == 0
    journal.close()


def test_a_clean_stop_leaves_nothing_to_replay(gateway: RunningGateway, tmp_path: Path) -> None:
    """Every row in ClickHouse at the stop: the next start finds no segment, so it replays
    nothing and says nothing of an earlier run; rows still waiting are kept."""
    store, route = gateway.state.store, f"clean-{uuid.uuid4().hex[:8]}"
    journal = Journal(tmp_path / "journal")
    writer = LogWriter(store, journal, {}, LogConfig(), GatewayMetrics())
    for row in _rows(3, route):
        journal.append("requests", row)
    writer._drain_journal(journal)
    assert journal.backlog_rows == 0
    journal.close()
    assert not list((tmp_path / "journal").glob("*.log"))
    again = Journal(tmp_path / "journal")
    assert again.backlog_rows == 0 and not again.segments
    for row in _rows(2, route):  # not yet drained when it stops
        again.append("requests", row)
    again.close()
    assert Journal(tmp_path / "journal").backlog_rows == 2
