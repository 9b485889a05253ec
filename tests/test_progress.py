"""A run reports its progress while it runs, in a file its watchers read."""

from __future__ import annotations

import time
from pathlib import Path

from distiller.progress import RunProgress, latest


def test_the_newest_report_of_the_newest_run_is_read(tmp_path: Path) -> None:
    assert latest(tmp_path) is None
    old, new = RunProgress(tmp_path / "run-1"), RunProgress(tmp_path / "run-2")
    old.report("train", 5, 10, 0.5, force=True)
    time.sleep(0.01)
    new.report("train", 1, 40, None, force=True)
    new.report("train", 2, 40, 1.25)  # within the half second: not written
    report = latest(tmp_path)
    assert report is not None and (report["step"], report["total"]) == (1, 40)
    new.report("evaluate", 3, 9, force=True)
    report = latest(tmp_path)
    assert report is not None and (report["stage"], report["step"]) == ("evaluate", 3)
    assert not list(tmp_path.glob("*/.progress.json.*")), "written aside, then renamed"
