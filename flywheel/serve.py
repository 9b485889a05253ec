"""The composition root of `flywheel serve`: the gateway app, plus what runs beside it in
embedded mode (the student server as a child process, the distiller on a thread).

Invariant: only this layer knows all three; the gateway and the distiller meet in
ClickHouse, the gateway and the student server over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time

import httpx
from starlette.applications import Starlette

from distiller.embedded import EmbeddedDistiller, die_with_parent
from distiller.publishing import restore
from flywheel.distill_cli import leases_for
from gateway.app import Companion, build_app, build_state
from gateway.config import GatewayConfig
from gateway.http_protocol import bounded_protocol
from gateway.state import GatewayState
from store import Store, StoreUnavailable

log = logging.getLogger("flywheel.serve")


class StudentServerProcess:
    """The student server as a child process: generation never shares the gateway's GIL.

    It starts empty, so every shadow, canary and promoted candidate's run is loaded into it
    again before the gateway listens (start) and whenever the child had to be started again
    (it died: a watcher thread restarts it)."""

    def __init__(self, config: GatewayConfig, ready_within_s: float = 180) -> None:
        self._config = config
        self._ready_within_s = ready_within_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def _launch(self) -> None:
        cmd = [sys.executable, "-m", "flywheel.cli", "students", "serve"]
        cmd += ["--port", str(self._config.students.port)]
        for name, path in self._config.students.models.items():
            cmd += ["--model", f"{name}={path}"]
        # Dies with the gateway even when the gateway is killed (no orphaned student server).
        self._proc = subprocess.Popen(cmd, preexec_fn=die_with_parent)

    def _ready(self) -> bool:
        """Until the child answers `/v1/models` (it imports torch first), or it exits."""
        url = f"http://127.0.0.1:{self._config.students.port}/v1/models"
        deadline = time.monotonic() + self._ready_within_s
        while time.monotonic() < deadline and not self._stopping.is_set():
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            self._stopping.wait(0.2)
        return False

    def _restore(self, state: GatewayState, why: str) -> None:
        try:
            pending = restore(
                state.store,
                state.router.policies,
                self._config.students.port,
                why,
                log=lambda line: log.info("student reloaded: %s", line),
                before=self._ready,
            )
        except StoreUnavailable as e:
            log.warning("students not reloaded (ClickHouse unavailable): %s", e)
            return
        for done in pending:
            if not done.ok:
                log.error("%s/%s not reloaded: %s", done.route, done.candidate, done.note)

    def start(self, state: GatewayState) -> None:
        self._launch()
        self._restore(state, "flywheel serve started")
        self._watcher = threading.Thread(
            target=self._watch, args=(state,), name="student-server", daemon=True
        )
        self._watcher.start()

    def _watch(self, state: GatewayState) -> None:
        while not self._stopping.wait(1.0):
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            log.error("student server exited (code %s): starting it again", proc.returncode)
            self._launch()
            self._restore(state, f"student server restarted after exit code {proc.returncode}")

    def stop(self) -> None:
        self._stopping.set()
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
