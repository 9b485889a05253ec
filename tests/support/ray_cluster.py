"""A real local Ray cluster for tests: `ray start --head` on 127.0.0.1 with one CPU, stopped
afterwards (skips outside CI when the `ray` package is missing; CI installs it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from tests.support.net import free_port, required_binary


@contextlib.contextmanager
def local_ray_cluster(cpus: int = 1) -> Iterator[str]:
    binary = required_binary("ray", "the dev extra")
    port = free_port()
    # Ray's Unix sockets live under its temp dir: keep the path short.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    args = ["--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    args += ["--num-cpus", str(cpus), "--include-dashboard", "false", "--disable-usage-stats"]
    args += ["--temp-dir", temp, "--object-store-memory", str(100 * 2**20)]
    subprocess.run(
        [binary, "start", *args],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([binary, "stop", "--force"], capture_output=True, env=env, timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
