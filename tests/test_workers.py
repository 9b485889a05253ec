"""`flywheel serve --workers N`: several gateway processes on one port around one store,
each with its own journal; a worker killed under load is replaced and loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.load import Load
from tests.support.net import wait_up
from tests.support.serve_process import serve_config, stop_serve, stored_ids
from tests.support.wait import eventually

pytestmark = pytest.mark.slow


def _workers_of(proc: subprocess.Popen[str]) -> dict[int, int]:
    """worker index -> pid, from the supervisor's children's command lines."""
    out = {}
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"--worker-index" in args:
                out[int(args[args.index(b"--worker-index") + 1])] = int(pid)
    return out


def test_workers_share_the_port_and_a_killed_worker_loses_nothing(tmp_path: Path, upstream) -> None:
    config, port = serve_config(tmp_path, upstream.base_url)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "serve", "--config", str(config), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_up(port, proc)
        base = f"http://127.0.0.1:{port}"
        seen = set()
        for _ in range(40):  # a new connection each time: the kernel spreads them
            seen.add(httpx.get(f"{base}/healthz", timeout=10).json()["worker"])
        assert seen == {0, 1}
        with Load(port, threads=6) as load:
            eventually(lambda: len(load.answered), 30, until=lambda n: n >= 150)
            victim = _workers_of(proc)[1]
            os.kill(victim, signal.SIGKILL)  # rows still in its journal, a batch inserting
            seen_at_kill = len(load.answered)
            eventually(lambda: len(load.answered), 60, until=lambda n: n >= seen_at_kill + 150)
        replaced = eventually(
            lambda: _workers_of(proc).get(1), 30, until=lambda p: p not in (None, victim)
        )
        assert replaced not in (None, victim)
        answered = load.answered
    finally:
        stop_serve(proc)
    stored = stored_ids(config)
    missing = set(answered) - set(stored)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no row"
    assert len(stored) == len(set(stored))
