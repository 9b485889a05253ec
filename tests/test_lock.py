"""`requirements.lock` is what a fresh machine installs: it must agree with `pyproject.toml`
(resolved from its current lists, every requirement pinned within its range) and with the
environment the suite runs in."""

from __future__ import annotations

import importlib.util
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_lock", ROOT / ".ci" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins() -> tuple[dict[str, str], dict[str, str]]:
    header: dict[str, str] = {}
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.startswith("# ") and ": " in line:
            key, _, value = line[2:].partition(": ")
            header[key] = value
        elif line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return header, pins


def test_the_lock_was_resolved_from_this_pyproject() -> None:
    header, _ = _pins()
    lock = _lock_module()
    assert header["pyproject-digest"] == lock.spec_digest(), (
        "pyproject.toml changed since requirements.lock was written: run `bash .ci/lock`, "
        "then the full suite"
    )
    assert header["extras"] == ",".join(lock.EXTRAS)


def test_every_requirement_is_pinned_within_its_range() -> None:
    _, pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = _lock_module()
    wanted = list(project["dependencies"])
    for extra in lock.EXTRAS:
        wanted += project["optional-dependencies"][extra]
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (text, pins[name])


def test_the_suite_runs_on_the_locked_versions() -> None:
    _, pins = _pins()
    drift = []
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in pins and Version(dist.version).public != Version(pins[name]).public:
            drift.append(f"{name} {dist.version} (lock: {pins[name]})")
    assert not drift, "installed versions differ from requirements.lock: " + ", ".join(drift)
