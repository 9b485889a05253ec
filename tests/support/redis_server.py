"""A real Redis for tests: Debian's `redis-server`, started on 127.0.0.1 and stopped."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.net import free_port, required_binary


@contextlib.contextmanager
def running_redis(tmp_path: Path) -> Iterator[str]:
    """Debian's redis-server on a free port of 127.0.0.1, stopped afterwards (skips outside
    CI when it is not installed; fails in CI, which installs it)."""
    binary = required_binary("redis-server", ".ci/run")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    import redis

    client = redis.Redis(port=port)
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)
