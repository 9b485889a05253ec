"""`flywheel demo`, checked from ClickHouse rather than from the demo's screen or counters."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from flywheel.demo.figures import cut_percent, per_thousand
from tests.support.net import free_port

pytestmark = pytest.mark.slow  # runs the whole flywheel


def _query(dsn: str, sql: str) -> list[list[str]]:
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


def _demo(tmp_path: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flywheel.cli",
            "demo",
            "--quick",
            "--data-dir",
            str(tmp_path / "demo"),
            "--report",
            str(tmp_path / "report.json"),
            "--port",
            str(free_port()),
            *extra,
        ],
        timeout=timeout,
        capture_output=True,
        text=True,
    )


def test_quick_demo_promotes_a_student_and_reports_the_steady_state(tmp_path: Path) -> None:
    run = _demo(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = json.loads((tmp_path / "report.json").read_text())
    dsn, steady = out["clickhouse"], out["steady"]
    assert "Steady state on `intents`" in run.stdout and "INFO" not in run.stdout
    # Every request sent is logged.
    logged = _query(dsn, "SELECT count() FROM requests WHERE kind = 'request'")
    assert int(logged[0][0]) == out["requests_sent"]
    # A promoted student served the routine workload's steady stretch.
    promoted = _query(
        dsn,
        "SELECT toUnixTimestamp64Milli(min(updated_at)) FROM candidate_states "
        "WHERE route = 'intents' AND candidate = 'small' AND state = 'promoted'",
    )
    since = int(promoted[0][0])
    rows = _query(
        dsn,
        "SELECT countIf(kind = 'request'), countIf(kind = 'request' AND served_by = 'student'), "
        "sumIf(cost_usd, kind = 'request') + sumIf(cost_usd, kind != 'request'), "
        "sumIf(baseline_cost_usd, kind = 'request') FROM requests WHERE route = 'intents' "
        f"AND started_at >= fromUnixTimestamp64Milli({since}, 'UTC')",
    )[0]
    n, by_student, spend, baseline = int(rows[0]), int(rows[1]), Decimal(rows[2]), Decimal(rows[3])
    assert n >= 100 and by_student / n >= 0.8
    # The reported steady-state figures are the rows' figures.
    assert steady["requests"] == n
    assert steady["cost_per_1000_usd"] == str(per_thousand(spend, n))
    assert steady["teacher_cost_per_1000_usd"] == str(per_thousand(baseline, n))
    assert steady["cut_percent"] == str(cut_percent(spend, baseline))
    assert Decimal(steady["cut_percent"]) > 50
    # The open-ended workload never left the teacher.
    off = _query(
        dsn, "SELECT count() FROM requests WHERE route = 'assistant' AND served_by != 'teacher'"
    )
    assert int(off[0][0]) == 0
    # The whole run's money equals ClickHouse's sums, to the nano-dollar.
    sums = _query(
        dsn, "SELECT sum(cost_usd), sumIf(baseline_cost_usd, kind = 'request') FROM requests"
    )
    assert Decimal(sums[0][0]) == Decimal(out["whole_run"]["spend_usd"])
    assert Decimal(sums[0][1]) == Decimal(out["whole_run"]["baseline_usd"])
    # The Next line's commands (without --keep-serving: the stopped store) work as printed.
    assert "flywheel report --dsn" in " ".join(run.stdout.split())
    for command in (["report", "--dsn", dsn, "--json"], ["query", "--dsn", dsn, "SELECT 1"]):
        done = subprocess.run(
            [sys.executable, "-m", "flywheel.cli", *command],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    # It exits once the summary is printed: nothing of it is left running.
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "demo")], capture_output=True)
    assert left.stdout == b"", left.stdout


def test_a_stalled_phase_says_which_and_why(tmp_path: Path) -> None:
    """A trigger the traffic cannot reach in the phase's bound: the demo stops and names the
    phase and the figure that was short."""
    run = _demo(tmp_path, "--trigger", "100000", "--phase-bound", "8", timeout=180)
    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-3000:]
    text = " ".join(run.stdout.split())
    assert "The demo stopped: collect stalled after 8 s: curated" in text
    assert "of the 100000 examples the trigger needs:" in text
    assert "near-duplicates dropped" in text


def test_an_existing_folder_it_did_not_create_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / "demo"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    run = _demo(tmp_path, timeout=120)
    assert run.returncode == 2
    assert "was not made by `flywheel demo`" in run.stderr
    assert (mine / "notes.txt").read_text() == "keep me"
