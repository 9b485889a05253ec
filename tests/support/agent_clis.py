"""The coding agents' real command-line clients, from npm, for the tests that drive them.

A client is found on `$FLYWHEEL_<NAME>_BIN`, else installed once (pinned version) into a
cache folder with npm. Where npm is missing or cannot install, the test is skipped saying so;
the fixture tests (`tests/data/agents/`) replay what the client sent in its place. A failed
install is tried once per test session (bounded: one fetch retry, a 4-minute cap), so a
machine without the registry costs CI minutes once, not per test.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("FLYWHEEL_AGENT_CLIS", Path.home() / ".cache" / "flywheel-agent-clis"))


@functools.cache
def _installed(package: str, version: str, binary: str) -> Path | str:
    """The binary's path, or why it cannot be had."""
    prefix = CACHE / f"{package.replace('/', '+')}@{version}"
    found = prefix / "node_modules" / ".bin" / binary
    if found.exists():
        return found
    npm = shutil.which("npm")
    if npm is None:
        return f"npm is not installed: cannot install {package}@{version}"
    prefix.mkdir(parents=True, exist_ok=True)
    install = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund"]
    try:
        done = subprocess.run(
            [*install, "--fetch-retries=1", "--fetch-timeout=30000", f"{package}@{version}"],
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired:
        return f"npm install {package}@{version} took over 240 s"
    if done.returncode != 0 or not found.exists():
        return f"npm could not install {package}@{version}: {done.stderr[-500:]}"
    return found


def agent_cli(package: str, version: str, binary: str) -> Path:
    """The path of `binary` from `package@version`, installed if need be, or skip."""
    env = f"FLYWHEEL_{binary.upper().replace('-', '_')}_BIN"
    if os.environ.get(env):
        return Path(os.environ[env])
    found = _installed(package, version, binary)
    if isinstance(found, str):
        pytest.skip(found)
    return found
