"""A model given by URL (a URL model store: `s3://...`, `gs://...`, `file:///...`), copied
once into a local cache before loading; a local path is used as it is.

Invariant: a cached copy is complete or absent: it is downloaded aside and renamed into
place, so a crash mid-download never leaves half a model to load.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def cache_dir() -> Path:
    return Path(
        os.environ.get("FLYWHEEL_MODEL_CACHE", Path.home() / ".cache" / "flywheel" / "models")
    )


def local_copy(path: str | Path) -> Path:
    """A local folder holding the model at `path`."""
    text = str(path)
    if "://" not in text:
        return Path(text)
    from fsspec.core import url_to_fs

    target = cache_dir() / hashlib.sha256(text.encode()).hexdigest()[:24]
    if target.exists():
        return target
    fs, base = url_to_fs(text)
    tmp = target.with_name(target.name + f".{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for remote in fs.find(base):
        local = tmp / remote[len(base) :].lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))
    os.replace(tmp, target)
    return target
