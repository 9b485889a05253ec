"""The model store: where a run's arguments, progress, result and artifacts live, reachable
from every node that trains or serves. A local directory (the default: `distiller.model_dir`),
or any fsspec URL (`s3://bucket/prefix` with s3fs, `gs://...` with gcsfs, `file:///shared`)
set as `distiller.backend.model_store`.

With a URL, a job runs in a scratch folder on its node: it downloads its arguments, pushes
`progress.json` while it trains, and uploads the run folder (adapter, merged model,
tokenizer, training log) before its result; the student server downloads a model from the
URL into its cache before loading it.

Invariant: `result.pkl` is written last, after the artifacts it names are in the store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def is_url(root: str | Path) -> bool:
    return "://" in str(root)


class ModelStore:
    def __init__(self, root: str | Path) -> None:
        self.root = str(root).rstrip("/")
        self.remote = is_url(self.root)
        self._fs: Any = None
        if self.remote:
            from fsspec.core import url_to_fs

            self._fs, self._base = url_to_fs(self.root)

    def location(self, rel: str) -> str:
        """Where `rel` is: a local path, or a URL."""
        return f"{self.root}/{rel}" if self.remote else str(Path(self.root) / rel)

    def artifact(self, path: Path) -> str:
        """Where a path from a job's result is: as given (local), or its URL."""
        return self.location(path.as_posix()) if self.remote else str(path)

    def _path(self, rel: str) -> str:
        return f"{self._base}/{rel}"

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.remote:
            target = self._path(rel)
            # (A no-op on object stores; a file:// store needs the folders.)
            self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self._fs.pipe_file(target, data)
            return
        path = Path(self.root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            if self.remote:
                data: bytes = self._fs.cat_file(self._path(rel))
                return data
            return (Path(self.root) / rel).read_bytes()
        except (FileNotFoundError, OSError):
            return None

    def upload(self, local_dir: Path, rel: str) -> None:
        """Copy a local folder's files to `rel` (a URL store only)."""
        for path in sorted(local_dir.rglob("*")):
            if path.is_file():
                target = self._path(f"{rel}/{path.relative_to(local_dir).as_posix()}")
                self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                self._fs.put_file(str(path), target)
