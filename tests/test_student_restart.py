"""A promoted student survives restarts: `flywheel serve` loads every serving candidate's run
into its (empty) student server before it listens, and starts a student server that died
again, with its students; each reload is an event.

Real parts only: `flywheel serve` as a process with its child student server, a trained tiny
student on disk, the embedded ClickHouse, the openai SDK; the teacher is the fake provider.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import openai
import pytest

from distiller.base_model import build_tiny_base
from tests.support.fake_upstream import FakeUpstreamThread
from tests.support.gateway import APP_KEY
from tests.support.net import free_port
from tests.support.serve_process import serve_config, start_serve, stop_serve
from tests.support.wait import eventually

pytestmark = pytest.mark.slow  # trains a tiny student and runs `flywheel serve` three times

TEXTS = [f"order {i} for customer {i * 7} is {w}" for i, w in enumerate(["late", "lost"] * 20)]


def _in_store(config: Path, code: str) -> object:
    """Run `code` against the gateway's embedded store from another process (one process owns
    a chdb path: the gateway must be stopped); `code` sets `out`."""
    script = (
        textwrap.dedent("""
        import json
        from datetime import UTC, datetime
        from gateway.config import load_config
        from store import open_store
        store = open_store(load_config({config!r}).clickhouse_dsn)
        now = datetime.now(UTC)
        out = None
    """).format(config=str(config))
        + textwrap.dedent(code)
        + "\nprint(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _served_by(port: int) -> str:
    raw = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=APP_KEY, max_retries=0
    ).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "order 3 for customer 21"}]
    )
    raw.parse()
    return raw.headers["x-flywheel-served-by"]


def _student_pid(student_port: int) -> int:
    """The child student server's pid, by its command line."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"students" in argv and b"serve" in argv and str(student_port).encode() in argv:
            return int(proc.name)
    raise AssertionError("no student server process")


def test_a_promoted_student_serves_after_restarts(
    tmp_path: Path, upstream: FakeUpstreamThread
) -> None:
    merged = build_tiny_base(TEXTS, tmp_path / "runs" / "run-1" / "merged", pretrain_steps=20)
    student_port = free_port()
    config, port = serve_config(
        tmp_path,
        upstream.base_url,
        students={"enabled": True, "port": student_port},
        distiller={"enabled": False},
        models={
            "teacher": {"model": "openai/gpt-4o", "api_base": upstream.base_url},
            "small": {
                "model": "flywheel/support-small",
                "api_base": f"http://127.0.0.1:{student_port}/v1",
                "price": {"input_per_million": "0.01"},
            },
        },
        routes=[
            {
                "name": "support",
                "match": {"models": ["gpt-4o"]},
                "teacher": "teacher",
                "candidates": [{"name": "small", "model": "small"}],
                "audit": {"share": 0.0},
            }
        ],
    )
    # What the distiller leaves when it promotes a run: the run's row and the slot's state.
    _in_store(
        config,
        f"""
        store.insert_rows(
            "training_runs",
            [["run-1", "support", "small", {str(merged)!r}, "succeeded", now, now]],
            ["run_id", "route", "candidate", "artifact_path", "status", "created_at",
             "updated_at"],
        )
        store.insert_rows(
            "candidate_states",
            [["support", "small", "run-1", "promoted", now, "promoted by the test", "d1", None]],
            ["route", "candidate", "version", "state", "updated_at", "reason", "dataset_id",
             "min_confidence"],
        )
        """,
    )
    for start in range(2):  # the first start after the promotion, then a restart
        proc = start_serve(config, port)
        try:
            assert _served_by(port) == "student", f"start {start + 1}"
            if start == 1:
                # The student server dies: the gateway starts it again with the student.
                os.kill(_student_pid(student_port), signal.SIGKILL)
                assert eventually(lambda: _student_is_back(student_port), 120)
                assert _served_by(port) == "student"
        finally:
            stop_serve(proc)
    events = _in_store(
        config,
        """
        out = [list(r) for r in store.query_rows(
            "SELECT kind, reason FROM events WHERE candidate = 'small' ORDER BY at")]
        """,
    )
    assert [e[0] for e in events] == ["student_reloaded"] * 3, events
    assert "flywheel serve started" in events[0][1] and "exit code -9" in events[2][1]


def _student_is_back(student_port: int) -> bool:
    try:
        r = httpx.get(f"http://127.0.0.1:{student_port}/v1/models", timeout=2)
    except httpx.HTTPError:
        return False
    return [m["id"] for m in r.json()["data"]] == ["support-small"]
