"""`flywheel demo --quick`, checked from ClickHouse rather than from the demo's counters."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.net import free_port

pytestmark = pytest.mark.slow  # trains, runs children or a browser: -m 'not slow' skips


def _query(dsn: str, sql: str) -> list[list]:
    """Read the demo's embedded store from another process (this one may own a chdb path)."""
    code = textwrap.dedent(f"""
        import json
        from store import open_store
        s = open_store({dsn!r})
        print(json.dumps([[str(v) for v in r] for r in s.query_rows({sql!r})]))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_quick_demo(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flywheel.cli",
            "demo",
            "--quick",
            "--data-dir",
            str(tmp_path / "demo"),
            "--report",
            str(report),
            "--port",
            str(free_port()),
        ],
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    out = json.loads(report.read_text())
    dsn = out["clickhouse"]
    # Every request sent is logged.
    logged = _query(dsn, "SELECT count() FROM requests WHERE kind = 'request'")
    assert int(logged[0][0]) == out["requests_sent"]
    # A routine workload got a promoted student that served traffic.
    promoted = _query(dsn, "SELECT route, candidate FROM candidate_states WHERE state = 'promoted'")
    assert ["intents", "small"] in promoted
    served = _query(
        dsn,
        "SELECT count() FROM requests WHERE route = 'intents' "
        "AND served_by = 'student' AND kind = 'request'",
    )
    assert int(served[0][0]) > 0
    # The open-ended workload stayed on the teacher.
    off = _query(
        dsn, "SELECT count() FROM requests WHERE route = 'assistant' AND served_by != 'teacher'"
    )
    assert int(off[0][0]) == 0
    # The reported money equals ClickHouse's sums, to the nano-dollar.
    sums = _query(
        dsn, "SELECT sum(cost_usd), sumIf(baseline_cost_usd, kind = 'request') FROM requests"
    )
    assert Decimal(sums[0][0]) == Decimal(out["spend_usd"])
    assert Decimal(sums[0][1]) == Decimal(out["baseline_usd"])
    assert Decimal(out["spend_usd"]) < Decimal(out["baseline_usd"])
