"""A real `flywheel serve` process for the fault tests: config, start, stop, its children,
and reading its embedded store once it has stopped (chdb lets one process own a path)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from tests.support.gateway import APP_KEY
from tests.support.net import free_port, wait_up


def serve_config(tmp: Path, upstream_url: str, **sections: Any) -> tuple[Path, int]:
    """A minimal gateway YAML (one app key, one route to the fake teacher); `sections`
    are merged in as top-level sections (`log={...}`, `clickhouse={...}`)."""
    port = free_port()
    config: dict[str, Any] = {
        "data_dir": str(tmp / "data"),
        "server": {"port": port},
        "models": {"teacher": {"model": "openai/gpt-4o", "api_base": upstream_url}},
        "apps": {"shop": {"team": "retail", "train_on_traffic": True}},
        "keys": [{"id": "k", "key": APP_KEY, "app": "shop"}],
        "routes": [{"name": "support", "match": {"models": ["gpt-4o"]}, "teacher": "teacher"}],
    }
    config.update(sections)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


def start_serve(config: Path, port: int, workers: int = 1) -> subprocess.Popen[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = [sys.executable, "-m", "flywheel.cli", "serve", "--config", str(config)]
    proc = subprocess.Popen(
        [*cmd, "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    wait_up(port, proc)
    return proc


def stop_serve(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """SIGTERM, wait, and return what it wrote to stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.stderr is not None
    return proc.stderr.read()


def store_child(proc: subprocess.Popen[str]) -> int:
    """The pid of the gateway's embedded-store process (its one multiprocessing child)."""
    # A child is listed under the thread that started it (here the log writer's).
    children = [
        pid
        for task in Path(f"/proc/{proc.pid}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]
    for pid in children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"multiprocessing" in cmdline:
            return int(pid)
    raise AssertionError("the gateway has no store process")


def stored_ids(config: Path) -> list[str]:
    """Every request id in the gateway's embedded store, duplicates included (read from
    another process; the gateway must have stopped)."""
    code = textwrap.dedent(f"""
        import json
        from gateway.config import load_config
        from store import open_store
        store = open_store(load_config({str(config)!r}).clickhouse_dsn)
        print(json.dumps([str(r[0]) for r in store.query_rows("SELECT request_id FROM requests")]))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    ids: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return ids


def kill_hard(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
