"""Nothing is lost: ClickHouse outages, full queues, hung-up clients, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.support.gateway import APP_KEY, RunningGateway
from tests.support.net import free_port, wait_up
from tests.support.wait import eventually


def _client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=APP_KEY, max_retries=0)


def _count(gw: RunningGateway, ids: list[str]) -> int:
    rows = gw.rows(
        "SELECT count() AS n FROM requests WHERE request_id IN {ids:Array(UUID)}", ids=ids
    )
    return int(rows[0]["n"])


def test_clickhouse_outage_spools_and_replays_every_row(gateway: RunningGateway) -> None:
    store, metrics = gateway.state.store, gateway.state.metrics
    client = _client(gateway)
    before = metrics.rows_spooled.labels("requests")._value.get()
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
        gateway.state.writer.flush()
        assert metrics.rows_spooled.labels("requests")._value.get() - before >= len(ids)
        assert gateway.state.spool.pending_rows() >= len(ids)
        health = httpx.get(gateway.base_url.replace("/v1", "/healthz")).json()
        assert health["clickhouse"]["spooled_rows_pending"] >= len(ids)
    finally:
        store.command("ATTACH TABLE requests")
    assert eventually(lambda: _count(gateway, ids), 20, lambda n: n >= len(ids)) == len(ids)
    assert not gateway.state.spool.has_pending()
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
    text = httpx.get(gateway.base_url.replace("/v1", "/metrics")).text
    for name in (
        "flywheel_requests_total",
        "flywheel_gateway_overhead_seconds_bucket",
        "flywheel_request_latency_seconds_bucket",
        "flywheel_tokens_total",
        "flywheel_cost_usd_total",
        "flywheel_log_queue_depth",
        "flywheel_rows_spooled_total",
        "flywheel_rows_written_total",
    ):
        assert name in text, name
    assert 'flywheel_requests_total{model="teacher",route="support",status="ok"}' in text


# --- a real `flywheel serve` process -------------------------------------------------------


def _serve_config(tmp: Path, upstream_url: str, **log: object) -> tuple[Path, int]:
    port = free_port()
    config = {
        "data_dir": str(tmp / "data"),
        "server": {"port": port},
        "log": log,
        "models": {"teacher": {"model": "openai/gpt-4o", "api_base": upstream_url}},
        "apps": {"shop": {"team": "retail", "train_on_traffic": True}},
        "keys": [{"id": "k", "key": APP_KEY, "app": "shop"}],
        "routes": [{"name": "support", "match": {"models": ["gpt-4o"]}, "teacher": "teacher"}],
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


def _ids_in_store(config: Path) -> set[str]:
    """Read the embedded store from another process (this one already owns a chdb path)."""
    code = textwrap.dedent(f"""
        import json
        from gateway.config import load_config
        from store import open_store
        store = open_store(load_config({str(config)!r}).clickhouse_dsn)
        print(json.dumps([str(r[0]) for r in store.query_rows("SELECT request_id FROM requests")]))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("log", "spilled"),
    [
        # Rows still queued at SIGTERM: the flush interval is far longer than the test.
        ({"flush_interval_s": 60, "batch_rows": 100000}, False),
        # A queue of 2 rows overflows at once: the rest spill to the spool.
        ({"queue_max_rows": 2, "flush_interval_s": 60, "batch_rows": 100000}, True),
    ],
    ids=["queued-at-sigterm", "queue-overflow"],
)
def test_sigterm_flushes_every_answered_request(tmp_path: Path, upstream, log, spilled) -> None:
    config, port = _serve_config(tmp_path, upstream.base_url, **log)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_up(port, proc)
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
        if proc.poll() is None:
            proc.kill()
    assert len(ids) == 40
    assert ids <= _ids_in_store(config)
    assert proc.stderr is not None
    assert ("replayed" in proc.stderr.read()) == spilled
