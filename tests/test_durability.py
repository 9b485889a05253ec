"""Nothing is lost: ClickHouse outages, full queues, hung-up clients, SIGTERM."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.gateway import APP_KEY, RunningGateway
from tests.support.serve_process import serve_config, start_serve, stop_serve, stored_ids
from tests.support.wait import eventually


def _client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=APP_KEY, max_retries=0)


def _count(gw: RunningGateway, ids: list[str]) -> int:
    rows = gw.rows(
        "SELECT count() AS n FROM requests WHERE request_id IN {ids:Array(UUID)}", ids=ids
    )
    return int(rows[0]["n"])


def test_clickhouse_outage_keeps_rows_in_the_journal_and_replays_them(
    gateway: RunningGateway,
) -> None:
    store, metrics = gateway.state.store, gateway.state.metrics
    client = _client(gateway)
    failures = metrics.insert_failures._value.get()
    replayed = metrics.rows_replayed._value.get()
    rollup_sql = (
        "SELECT sum(t.requests) AS n, sum(t.cost_usd) AS cost FROM spend_hourly AS t"
        " WHERE route = 'support' AND app = 'shop'"
    )
    rollup_before = gateway.rows(rollup_sql)[0]
    store.command("DETACH TABLE requests")  # ClickHouse stops accepting rows for it
    try:
        ids = [
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"during outage {i}"}]
            ).id
            for i in range(15)
        ]
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "streamed in outage"}],
            stream=True,
        )
        ids.append(next(iter(stream)).id)
        list(stream)
        assert not gateway.state.writer.flush()  # ClickHouse refused them
        assert metrics.insert_failures._value.get() > failures
        assert gateway.state.writer.backlog_rows() >= len(ids)
        gateway.state.health_cache.clear()
        health = httpx.get(gateway.base_url.replace("/v1", "/healthz")).json()
        assert health["clickhouse"]["rows_pending"] >= len(ids)
        assert health["status"] != "ok"
    finally:
        store.command("ATTACH TABLE requests")
    assert eventually(lambda: _count(gateway, ids), 20, lambda n: n >= len(ids)) == len(ids)
    assert gateway.state.writer.flush() and gateway.state.writer.backlog_rows() == 0
    assert metrics.rows_replayed._value.get() - replayed >= len(ids)
    # Replays carry their dedup token: a second replay of the same batch adds nothing.
    rows = gateway.rows(
        "SELECT count() AS n, uniqExact(request_id) AS u FROM requests "
        "WHERE request_id IN {ids:Array(UUID)}",
        ids=ids,
    )
    assert rows[0]["n"] == rows[0]["u"] == len(ids)
    # The finance rollups saw every replayed row once, to the nano-dollar.
    rollup_after = gateway.rows(rollup_sql)[0]
    cost = gateway.rows(
        "SELECT sum(cost_usd) AS c FROM requests WHERE request_id IN {ids:Array(UUID)}", ids=ids
    )[0]["c"]
    assert rollup_after["n"] - rollup_before["n"] == len(ids)
    assert rollup_after["cost"] - rollup_before["cost"] == cost > 0


def test_client_disconnect_mid_stream_is_logged(gateway: RunningGateway) -> None:
    body = {
        "model": "gpt-4o",
        "stream": True,
        "messages": [{"role": "user", "content": "w1 w2 w3 w4 w5 w6 w7 w8 [[drip:0.2]]"}],
    }
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {APP_KEY}"},
    ) as r:
        request_id = r.headers["x-request-id"]
        next(r.iter_bytes())
    rows = eventually(
        lambda: gateway.rows(
            "SELECT status, http_status, response FROM requests WHERE request_id = {id:UUID}",
            id=request_id,
        )
    )
    assert rows and rows[0]["status"] == "client_disconnect"
    assert rows[0]["http_status"] == 499
    assert "echo" in rows[0]["response"], "the part streamed before the hang-up is kept"


def test_upstream_dropping_mid_stream_sends_error_event(gateway: RunningGateway) -> None:
    client = _client(gateway)
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a b c d e [[cut]]"}], stream=True
    )
    first = next(iter(stream))
    with pytest.raises(openai.APIError):
        list(stream)
    row = gateway.row(first.id)  # written just after the last event: it may trail the client
    assert row["status"] == "upstream_error" and row["error"]


def test_healthz_and_metrics(gateway: RunningGateway) -> None:
    _client(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "metric me"}]
    )
    gateway.state.health_cache.clear()
    health = httpx.get(gateway.base_url.replace("/v1", "/healthz"))
    assert health.status_code == 200
    body = health.json()
    assert body["clickhouse"]["ok"] is True and body["clickhouse"]["backend"] == "embedded"
    assert body["upstreams"]["teacher"] is True and body["upstreams"]["dead"] is False
    assert body["status"] == "degraded"  # one upstream is down
    # The teacher names a key variable nobody set: said before a request fails with 502.
    assert body["missing_api_keys"] == {"FAKE_UPSTREAM_KEY": ["teacher"]}
    text = httpx.get(gateway.base_url.replace("/v1", "/metrics")).text
    for name in (
        "flywheel_requests_total",
        "flywheel_gateway_overhead_seconds_bucket",
        "flywheel_request_latency_seconds_bucket",
        "flywheel_tokens_total",
        "flywheel_cost_usd_total",
        "flywheel_log_queue_depth",
        "flywheel_log_insert_failures_total",
        "flywheel_journal_writable",
        "flywheel_rows_written_total",
    ):
        assert name in text, name
    assert 'flywheel_requests_total{model="teacher",route="support",status="ok"}' in text


# --- a real `flywheel serve` process -------------------------------------------------------


@pytest.mark.slow
def test_sigterm_flushes_every_answered_request(tmp_path: Path, upstream) -> None:
    # Rows still in the journal at SIGTERM: the flush interval is far longer than the test.
    config, port = serve_config(
        tmp_path, upstream.base_url, log={"flush_interval_s": 60, "batch_rows": 100000}
    )
    proc = start_serve(config, port)
    try:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=APP_KEY, max_retries=0
        )

        def call(i: int) -> str:
            return client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"req {i}"}]
            ).id

        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(call, range(40)))
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal (exit -15) as is conventional.
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        stop_serve(proc)
    assert len(ids) == 40
    stored = stored_ids(config)
    assert ids <= set(stored) and len(stored) == len(set(stored))
