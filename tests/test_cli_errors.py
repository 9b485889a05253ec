"""Command-line failures a user can cause: one line naming the cause and the fix, exit 2,
no traceback (unless --debug). Each case through the real `flywheel` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.gateway import RunningGateway
from tests.support.net import free_port


def _flywheel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )


def _one_line(done: subprocess.CompletedProcess[str], command: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.startswith(f"flywheel {command}: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_no_gateway_at_the_url_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["distill", "--status"], ["report"]):
        line = _one_line(_flywheel(*command, "--url", url, "--key", "k"), command[0])
        assert f"no gateway answers at {url}" in line and "flywheel serve" in line


def test_a_wrong_key_is_one_line_naming_the_fix(gateway: RunningGateway) -> None:
    root = gateway.base_url.removesuffix("/v1")
    line = _one_line(_flywheel("distill", "--status", "--url", root, "--key", "sk-no"), "distill")
    assert "refused the key (401" in line and "--key" in line


def test_a_store_held_by_a_running_gateway_names_the_way_in(gateway: RunningGateway) -> None:
    dsn = gateway.state.config.clickhouse_dsn
    assert dsn.startswith("chdb://")
    line = _one_line(_flywheel("query", "--dsn", dsn, "SELECT 1"), "query")
    assert "holds this embedded store" in line and "--url http://127.0.0.1:PORT --key" in line


def test_bad_sql_and_a_missing_config_are_one_line(tmp_path: Path) -> None:
    line = _one_line(_flywheel("query", "--dsn", f"chdb://{tmp_path}/db", "SELEC 1"), "query")
    assert "Syntax error" in line
    missing = _flywheel("query", "--config", str(tmp_path / "nope.yaml"), "SELECT 1")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "nope.yaml: [Errno 2] No such file" in missing.stderr  # config errors: file: why
    debug = _flywheel("--debug", "query", "--dsn", f"chdb://{tmp_path}/db", "SELEC 1")
    assert debug.returncode != 0 and "Traceback" in debug.stderr
