"""Fault injection on a real `flywheel serve`: whatever single thing fails, every request the
gateway answered ends in ClickHouse exactly once.

Each test ends with "answered ids ⊆ rows in ClickHouse, no duplicates", read from the
embedded store after the gateway stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import APP_KEY, gateway_config, start_gateway
from tests.support.load import Load
from tests.support.net import free_port
from tests.support.serve_process import (
    kill_hard,
    serve_config,
    start_serve,
    stop_serve,
    store_child,
    stored_ids,
)
from tests.support.wait import eventually

pytestmark = pytest.mark.slow


def _assert_all_stored(config: Path, answered: list[str]) -> None:
    stored = stored_ids(config)
    missing = set(answered) - set(stored)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no row"
    assert len(stored) == len(set(stored)), "a row was stored twice"


def _wait_for_backlog(port: int, within_s: float = 60) -> None:
    """Until the gateway says nothing waits to reach ClickHouse."""

    def pending() -> int:
        body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        return int(body["clickhouse"]["rows_pending"])

    assert eventually(pending, within_s, until=lambda n: n == 0) == 0


def test_sigkill_under_load_loses_no_answered_row(tmp_path: Path, upstream) -> None:
    config, port = serve_config(tmp_path, upstream.base_url)
    proc = start_serve(config, port)
    try:
        with Load(port) as load:
            eventually(lambda: len(load.answered), 30, until=lambda n: n >= 300)
            kill_hard(proc)  # mid-load: requests in flight, rows queued, a batch inserting
        assert len(load.answered) >= 300
        proc = start_serve(config, port)  # the next start replays what the journal holds
        _wait_for_backlog(port)
    finally:
        stderr = stop_serve(proc)
    assert "wait in the journal" in stderr or "replaying" in stderr
    _assert_all_stored(config, load.answered)


def test_a_stopped_then_killed_store_loses_no_answered_row(tmp_path: Path, upstream) -> None:
    """The store process hangs (SIGSTOP): answers go on, health says so within its bound,
    SIGTERM exits on time; after a restart the store process is killed under load."""
    config, port = serve_config(
        tmp_path,
        upstream.base_url,
        clickhouse={"timeout_s": 2},
        log={"flush_interval_s": 0.1, "replay_interval_s": 0.5},
    )
    answered: list[str] = []
    proc = start_serve(config, port)
    try:
        with Load(port, threads=4) as load:
            eventually(lambda: len(load.answered), 30, until=lambda n: n >= 50)
            hung = store_child(proc)
            os.kill(hung, signal.SIGSTOP)
            seen = len(load.answered)
            eventually(lambda: len(load.answered), 30, until=lambda n: n >= seen + 100)
            t0 = time.monotonic()
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=15)
            assert time.monotonic() - t0 < 10, "health must not hang with the store"
            assert health.status_code == 200
        answered += load.answered
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # while the store may still hang
        proc.wait(60)
        assert time.monotonic() - t0 < 45
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
        proc = start_serve(config, port)
        with Load(port, threads=4) as load:
            eventually(lambda: len(load.answered), 30, until=lambda n: n >= 50)
            os.kill(store_child(proc), signal.SIGKILL)
            seen = len(load.answered)
            eventually(lambda: len(load.answered), 30, until=lambda n: n >= seen + 100)
        answered += load.answered
        _wait_for_backlog(port)
    finally:
        stop_serve(proc)
    _assert_all_stored(config, answered)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode:
        reason = f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_journal_disk_refuses_traffic_then_recovers(tmp_path: Path, upstream) -> None:
    """ClickHouse refuses rows, so they pile up in the journal until its disk (a 64 KB tmpfs)
    is full: the gateway then refuses traffic and says so; once ClickHouse takes the rows
    the journal's segments are deleted and traffic resumes by itself."""
    data = tmp_path / "data"
    with _tmpfs(data / "journal", "64k"):
        config = gateway_config(data, upstream.base_url, log={"replay_interval_s": 0.2})
        gw = start_gateway(config)
        try:
            client = httpx.Client(
                base_url=gw.base_url, headers={"Authorization": f"Bearer {APP_KEY}"}, timeout=10
            )

            def ask(i: int) -> httpx.Response:
                body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"full {i}"}]}
                return client.post("/chat/completions", json=body)

            answered: list[str] = []
            refused = None
            gw.state.store.command("DETACH TABLE requests")
            try:
                for i in range(500):
                    r = ask(i)
                    if r.status_code != 200:
                        refused = r
                        break
                    answered.append(r.json()["id"])
                assert refused is not None, "a 64 KB journal never filled"
                assert refused.status_code == 503
                assert refused.json()["error"]["code"] == "log_unavailable"
                assert "No space left" in refused.json()["error"]["message"]
                assert len(answered) > 5
                gw.state.health_cache.clear()
                health = httpx.get(gw.base_url.replace("/v1", "/healthz"))
                assert health.status_code == 503
                assert health.json()["journal"]["refusing_traffic"] is True
                metrics = httpx.get(gw.base_url.replace("/v1", "/metrics")).text
                assert "flywheel_journal_writable 0.0" in metrics
                assert ask(-2).status_code == 503  # still refusing while nothing drains
            finally:
                gw.state.store.command("ATTACH TABLE requests")
            # ClickHouse takes the journal's rows, its segment is deleted, traffic resumes.
            ok = eventually(lambda: ask(-1), 30, until=lambda r: r.status_code == 200)
            assert ok.status_code == 200
            answered.append(ok.json()["id"])
            rows = gw.rows(
                "SELECT request_id, status FROM requests WHERE request_id IN {ids:Array(UUID)}",
                ids=answered,
            )
            assert len(rows) == len(answered) and {r["status"] for r in rows} == {"ok"}
        finally:
            gw.stop()


def _raw_http(port: int, payload: bytes, read_s: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_s) as s:
        s.sendall(payload)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def test_oversized_heads_and_silent_clients_are_cut_off(tmp_path: Path, upstream) -> None:
    server = {"port": free_port(), "head_timeout_s": 1.0, "body_timeout_s": 1.0}
    config = gateway_config(tmp_path, upstream.base_url, server=server)
    gw = start_gateway(config)
    try:
        huge = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (2 << 20) + b"\r\n\r\n"
        answer = _raw_http(gw.port, huge)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
        assert b'"headers_too_large"' in answer
        t0 = time.monotonic()
        silent = _raw_http(gw.port, b"GET /healthz HTTP/1.1\r\nhost: x\r\n", read_s=10)
        assert silent.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 5
        # A slow body: the head arrives, the body never does.
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                b"authorization: Bearer " + APP_KEY.encode() + b"\r\n"
                b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{"
            )
            answer = _read_response(s)
        assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
    finally:
        gw.stop()


def test_keep_alive_survives_an_internal_error(gateway, monkeypatch) -> None:
    calls: list[int] = []
    real = gateway.state.keys.authenticate

    def flaky(headers: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(headers)  # type: ignore[arg-type]

    monkeypatch.setattr(gateway.state.keys, "authenticate", flaky)
    request = (
        b"GET /admin/api/me HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        + APP_KEY.encode()
        + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(request)
        first = _read_response(s)
        s.sendall(request)
        second = _read_response(s)
    assert first.startswith(b"HTTP/1.1 500") and b'"internal_error"' in first
    assert b"Traceback" not in first
    assert second.startswith(b"HTTP/1.1 403"), "the same connection answered the next request"


def _read_response(s: socket.socket) -> bytes:
    recv: Callable[[int], bytes] = s.recv
    data = b""
    while b"\r\n\r\n" not in data:
        data += recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += recv(65536)
    return head + b"\r\n\r\n" + body
