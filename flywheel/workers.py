"""`flywheel serve --workers N`: N gateway processes on one port, one supervisor.

The supervisor binds the port once and hands the socket to each worker (the kernel spreads
connections between the processes accepting on it). It owns what must exist once: the
embedded store (served to the workers over a Unix socket, `store/remote.py`), the student
server and the distiller (the app's lifespan, run here without serving HTTP). Each worker is
a whole gateway with its own journal (`<data_dir>/journal/w<i>`), so a worker killed at any
instant loses nothing: its replacement, same index, replays its journal.

Invariant: a worker that dies is restarted with its index; SIGTERM stops the workers first
(each flushes its journal into the store), then the companions, then the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from distiller.embedded import die_with_parent
from flywheel.serve import companions_for
from gateway.app import build_app, build_state
from gateway.config import GatewayConfig
from gateway.journal import Journal, JournalUnavailable
from gateway.log_writer import LogWriter
from gateway.state import GatewayState
from store import Store, StoreUnavailable, server_store
from store.remote import StoreServer

log = logging.getLogger("flywheel.workers")

SOCKET_ENV, AUTHKEY_ENV = "FLYWHEEL_STORE_SOCKET", "FLYWHEEL_STORE_AUTHKEY"


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _socket_path(cfg: GatewayConfig) -> str:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    path = (cfg.data_dir / "store.sock").resolve()
    _remove(str(path))  # left by a supervisor that was killed
    return str(path)


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def _drain_worker_journals(state: GatewayState, store: Store) -> None:
    """Rows a worker journaled but did not insert (it was killed, or stopped while its
    replacement was still starting): inserted now, while the store is still here."""
    for directory in sorted(state.config.journal_dir.glob("w*")):
        try:
            journal = Journal(directory, state.config.log.journal_segment_bytes)
        except JournalUnavailable:
            continue  # still owned: a worker that did not stop
        if journal.backlog_rows:
            writer = LogWriter(store, journal, state.router.prices, state.config.log, state.metrics)
            writer.start()
            if not writer.flush(60):
                log.error("rows of %s could not be inserted; they stay there", directory)
            writer.close()
        else:
            journal.close()


class Supervisor:
    def __init__(self, config_path: str, config: GatewayConfig, workers: int, log_level: str):
        self.config_path = config_path
        self.config = config
        self.n = workers
        self.log_level = log_level
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def _spawn(self, index: int, fd: int, env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "flywheel.cli", "serve", "--config", self.config_path]
        cmd += ["--worker-index", str(index), "--fd", str(fd), "--log-level", self.log_level]
        self.procs[index] = subprocess.Popen(
            cmd, pass_fds=(fd,), env=env, preexec_fn=die_with_parent
        )

    async def run(self) -> int:
        cfg = self.config
        sock = _listen(cfg.server.host, cfg.server.port)
        address = _socket_path(cfg)
        authkey = os.urandom(16).hex()
        store = server_store(cfg.clickhouse_dsn, cfg.clickhouse.timeout_s)
        try:
            await asyncio.to_thread(store.ensure_schema)
        except StoreUnavailable as e:
            log.warning("ClickHouse unavailable at start: %s", e)
        server = StoreServer(store, address, authkey.encode())
        env = {**os.environ, SOCKET_ENV: address, AUTHKEY_ENV: authkey}
        # The app without HTTP: its lifespan runs the policy watcher and the companions
        # (student server, distiller) once, here, for every worker.
        state = build_state(cfg, store, journal_dir=cfg.journal_dir / "supervisor")
        app = build_app(state, companions_for(cfg))
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        try:
            async with app.router.lifespan_context(app):
                for i in range(self.n):
                    self._spawn(i, sock.fileno(), env)
                log.warning(
                    "serving on %s:%d with %d workers", cfg.server.host, cfg.server.port, self.n
                )
                while not done.is_set():
                    for i, proc in list(self.procs.items()):
                        if proc.poll() is not None:
                            log.error("worker %d exited (%s); restarting it", i, proc.returncode)
                            self._spawn(i, sock.fileno(), env)
                    try:
                        await asyncio.wait_for(done.wait(), 0.5)
                    except TimeoutError:
                        pass
                await self._stop_workers()
                await asyncio.to_thread(_drain_worker_journals, state, store)
        finally:
            sock.close()
            server.close()
            store.close()
            _remove(address)
        return 0

    async def _stop_workers(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
