"""The demo's closing summary reads as sentences: phases by name with when each began, and
dollar amounts from the figures' Decimal text (never a Python dict or a float)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from flywheel.demo.runner import Options, _print


def test_the_summary_names_phases_and_prints_decimal_dollars() -> None:
    console = Console(record=True, width=400)
    result = {
        "requests_sent": 1234,
        "seconds": 95.2,
        "phase_started_after_s": {"collect": 0.0, "train": 12.5, "shadow": 40.0},
        "stalled": None,
        "steady": None,
        "whole_run": {
            "spend_usd": "0.123456789",
            "baseline_usd": "2.50005",
            "overhead_usd": "0.00001",
            "savings_percent": "95.1",
            "routes": {},
        },
        "dashboard": "http://127.0.0.1:1/dashboard",
    }
    opts = Options(quick=True, data_dir=Path("d"), report=None, keep_serving=False, port=1)
    _print(console, result, opts, "chdb:///d", Path("log"))
    text = console.export_text()
    assert "phases: collect at 0 s, train at 12.5 s, shadow at 40 s" in text
    assert "spend $0.1235 against the teacher baseline $2.5000" in text
    assert "overhead $0.0000 " in text and "95.1% saved" in text
    assert "{" not in text
