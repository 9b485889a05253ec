"""The composition root of `flywheel serve`: the gateway app, plus what runs beside it in
embedded mode (the student server as a child process, the distiller on a thread).

Invariant: only this layer knows all three; the gateway and the distiller meet in
ClickHouse, the gateway and the student server over HTTP.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

from starlette.applications import Starlette

from distiller.embedded import EmbeddedDistiller, die_with_parent
from flywheel.distill_cli import leases_for
from gateway.app import Companion, build_app, build_state
from gateway.config import GatewayConfig
from gateway.http_protocol import bounded_protocol
from gateway.state import GatewayState
from store import Store


class StudentServerProcess:
    """The student server as a child process: generation never shares the gateway's GIL."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, state: GatewayState) -> None:
        cmd = [sys.executable, "-m", "flywheel.cli", "students", "serve"]
        cmd += ["--port", str(self._config.students.port)]
        for name, path in self._config.students.models.items():
            cmd += ["--model", f"{name}={path}"]
        # Dies with the gateway even when the gateway is killed (no orphaned student server).
        self._proc = subprocess.Popen(cmd, preexec_fn=die_with_parent)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()


class DistillerThread:
    """The distiller beside the gateway, reading the live policy through the gateway state."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self.worker: EmbeddedDistiller | None = None

    def start(self, state: GatewayState) -> None:
        cfg = self._config.distiller
        self.worker = EmbeddedDistiller(
            state.store,
            lambda: state.router.policies,
            self._config.model_dir(),
            cfg.interval_s,
            cfg.backend,
            leases_for(self._config, state.store),
        )
        self.worker.start()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


def companions_for(config: GatewayConfig) -> list[Companion]:
    out: list[Companion] = []
    if config.students.enabled:
        out.append(StudentServerProcess(config))
    if config.distiller.enabled:
        out.append(DistillerThread(config))
    return out


def build_gateway(
    config: GatewayConfig, store: Store | None = None
) -> tuple[GatewayState, Starlette]:
    """The state and the app of a gateway with its embedded companions."""
    state, app, _ = build_gateway_with(config, store)
    return state, app


def build_worker(config: GatewayConfig, index: int, store: Store) -> tuple[GatewayState, Starlette]:
    """One of `--workers N`: a whole gateway on the supervisor's store, with a journal of
    its own and no companions (the supervisor runs those once)."""
    state = build_state(config, store, journal_dir=config.journal_dir / f"w{index}", worker=index)
    return state, build_app(state, [])


def build_gateway_with(
    config: GatewayConfig, store: Store | None = None
) -> tuple[GatewayState, Starlette, list[Companion]]:
    """`build_gateway`, also returning the companions (the demo watches the distiller)."""
    state = build_state(config, store)
    companions = companions_for(config)
    return state, build_app(state, companions), companions


class GatewayThread:
    """A gateway served from a thread of this process (the demo, benchmarks and tests read
    the embedded store it owns through `state.store`, which only this process may open)."""

    def __init__(self, config: GatewayConfig, port: int | None = None) -> None:
        import uvicorn

        self.state, app, self.companions = build_gateway_with(config)
        self.port = port or config.server.port
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                loop="asyncio",
                http=bounded_protocol(config.server.max_head_bytes, config.server.head_timeout_s),
                log_level="warning",
            )
        )
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve()), name="gateway", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 60) -> GatewayThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start (see its log)")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 60) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.state.store.close()  # its embedded engine's path is free for the next owner
