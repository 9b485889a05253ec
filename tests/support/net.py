"""Ports and processes on 127.0.0.1 for tests that start servers."""

from __future__ import annotations

import socket
import subprocess

import httpx

from tests.support.wait import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(
    port: int,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    path: str = "/healthz",
    within_s: float = 60,
) -> None:
    """Until a child server answers on `path` (any status); fails at once if it exits."""

    def answered() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        try:
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)
        except httpx.TransportError:
            return False
        return True

    assert eventually(answered, within_s), f"server on port {port} did not come up"


def required_binary(name: str, installed_by: str) -> str:
    """The path of a program a test needs: skipped outside CI when it is missing, a failure
    in CI (whose setup installs it)."""
    import os
    import shutil

    import pytest

    binary = shutil.which(name)
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed ({installed_by} installs it)")
        pytest.skip(f"{name} is not installed")
    return binary
