"""Writes `requirements.lock`: every package a fresh machine installs for the locked extras,
at one exact version, resolved by pip itself (`pip install --dry-run --report`).

The tests install it as requirements (`pip install -r requirements.lock -e ".[dev,bases]"`),
the demo as constraints (`-c`, only what `.[bases]` needs); the project's own ranges stay
open in `pyproject.toml` for people who install the published package. Its header
carries a digest of the dependency lists it was resolved from: `tests/test_lock.py` fails when
`pyproject.toml` changes and the lock is not refreshed. Run through `bash .ci/lock`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
# The extras CI and the README install; `ray` is inside `dev`. Not locked: `bench`
# (litellm[proxy] needs a litellm-proxy release for its litellm, so it resolves an older
# litellm than the suite's) and `vllm` (it pins its own CUDA torch).
EXTRAS = ("dev", "bases")


def spec_digest(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """A digest of what the lock is resolved from: the base list and the locked extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    parts = {"dependencies": sorted(project["dependencies"])}
    extras = project.get("optional-dependencies", {})
    parts.update({name: sorted(extras.get(name, [])) for name in EXTRAS})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def resolve() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                "torch==2.13.0",
                "-e",
                f"{ROOT}[{','.join(EXTRAS)}]",
            ],
            check=True,
        )
        installs = json.loads(report.read_text())["install"]
    pins: dict[str, str] = {}
    for item in installs:
        name = item["metadata"]["name"].lower().replace("_", "-")
        if name == "flywheel":
            continue
        version = item["metadata"]["version"]
        # torch keeps its local label (`2.13.0+cpu`): the exact CPU build, which pip finds
        # through its configured find-links (or PyTorch's CPU index), never PyPI's CUDA one.
        pins[name] = version
    return pins


def main() -> None:
    pins = resolve()
    lines = [
        "# Exact versions for a fresh machine (Linux x86_64, CPython 3.11). Do not edit by hand:",
        "# refresh with `bash .ci/lock`, then run the full suite (`CI=true bash .ci/run`).",
        f"# extras: {','.join(EXTRAS)}",
        f"# pyproject-digest: {spec_digest()}",
    ]
    lines += [f"{name}=={version}" for name, version in sorted(pins.items())]
    LOCK.write_text("\n".join(lines) + "\n")
    print(f"wrote {LOCK.name}: {len(pins)} packages")


if __name__ == "__main__":
    main()
