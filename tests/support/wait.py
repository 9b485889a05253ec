"""The one way tests wait: poll a function until its result is what they want.

Background work (rows written by the log writer thread, streams finished after their last
byte, states refreshed by the reloader) lands a moment after the call that caused it; a
test waits for it with `eventually`, never with a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    fn: Callable[[], T],
    timeout: float = 10.0,
    until: Callable[[T], bool] = bool,
    interval: float = 0.05,
) -> T:
    """Call `fn` until `until(result)` holds or `timeout` seconds pass; return the last
    result either way (the caller asserts on it, so a failure shows what was seen)."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if until(result) or time.monotonic() >= deadline:
            return result
        time.sleep(interval)
