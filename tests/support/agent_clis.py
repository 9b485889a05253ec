"""The coding agents' real command-line clients, from npm, for the tests that drive them.

A client is found on `$FLYWHEEL_<NAME>_BIN`, else installed once (pinned version) into a
cache folder with npm. Where npm is missing or cannot install, the test is skipped saying so;
the fixture tests (`tests/data/agents/`) replay what the client sent in its place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("FLYWHEEL_AGENT_CLIS", Path.home() / ".cache" / "flywheel-agent-clis"))


def agent_cli(package: str, version: str, binary: str) -> Path:
    """The path of `binary` from `package@version`, installed if need be, or skip."""
    env = f"FLYWHEEL_{binary.upper().replace('-', '_')}_BIN"
    if os.environ.get(env):
        return Path(os.environ[env])
    prefix = CACHE / f"{package.replace('/', '+')}@{version}"
    found = prefix / "node_modules" / ".bin" / binary
    if found.exists():
        return found
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not installed: cannot install {package}@{version}")
    prefix.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            f"{package}@{version}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not found.exists():
        pytest.skip(f"npm could not install {package}@{version}: {done.stderr[-500:]}")
    return found
