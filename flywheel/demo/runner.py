"""`flywheel demo`: the gateway, the student server, the distiller and a local teacher, with
seeded traffic from two apps, run by phases until a routine workload is served by a
promoted student for a steady stretch.

The demo drives the same parts a production user runs: `flywheel serve`'s app (embedded
ClickHouse, the student server as its child, the distiller in its thread with training in a
subprocess). Only the teacher is a stand-in (`teacher.py`), and the traffic generator.
Library logs go to `<data dir>/demo.log` (`--verbose` shows them instead); the screen shows
the phase, its bound and the money.

Invariant: the demo never deletes a folder it did not create (it marks its own), exits once
its summary is printed, and leaves no training worker or student server behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import openai
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from flywheel.demo.config import (
    ADMIN_KEY,
    CANDIDATE,
    KEYS,
    ROUTE,
    Student,
    choose_student,
    demo_config,
)
from flywheel.demo.figures import steady_state, whole_run
from flywheel.demo.phases import Bounds, Progress, Stalled, advance
from flywheel.demo.teacher import LocalTeacher
from flywheel.demo.workloads import Traffic
from flywheel.serve import DistillerThread, GatewayThread

MARKER = ".flywheel-demo"


class DemoError(Exception):
    """Something the user must fix before the demo can run (a folder it will not touch)."""


@dataclass(frozen=True)
class Options:
    quick: bool
    data_dir: Path
    report: Path | None
    keep_serving: bool
    port: int
    verbose: bool = False
    trigger: int | None = None
    phase_bound: float | None = None


def prepare_dir(data_dir: Path) -> None:
    """A fresh data dir: one the demo made before is emptied; anything else is refused."""
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise DemoError(
                f"{data_dir} exists and was not made by `flywheel demo`: give another "
                "--data-dir (the demo never deletes a folder it did not create)"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("made by flywheel demo; safe to delete\n")


class _Quiet:
    """Send this process's and its children's stdout/stderr to the log file (tqdm bars,
    trainer dictionaries, uvicorn and httpx lines), keeping the terminal for the screen."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.terminal: TextIO = sys.stdout

    def __enter__(self) -> TextIO:
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        self.terminal = os.fdopen(os.dup(1), "w", buffering=1)
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
            force=True,
        )
        for chatty in ("httpx", "httpx2", "openai"):  # a line per request otherwise
            logging.getLogger(chatty).setLevel(logging.WARNING)
        return self.terminal

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)


def _screen(
    progress: Progress, bounds: Bounds, student: Student, sent: int, run: dict[str, Any]
) -> Group:
    now = time.monotonic()
    phases = Table(box=None, show_header=False)
    limits = {
        "collect": bounds.collect,
        "train": bounds.train,
        "canary": bounds.canary,
        "steady": bounds.steady,
    }
    for name, limit in limits.items():
        began = progress.started.get(name)
        bar: Any = ""
        if began is None:
            mark, spent = "·", ""
        elif name == progress.phase:
            mark, spent = "▶", f"{now - began:.0f}s of {limit:.0f}s"
            bar = ProgressBar(total=1.0, completed=progress.done, width=20)
        else:
            mark, spent = "✓", ""
        phases.add_row(mark, name, spent, bar, progress.detail if name == progress.phase else "")
    money = Table("workload", "requests", "served by student", "spend $", "teacher baseline $")
    for name, r in run.get("routes", {}).items():
        money.add_row(
            name,
            str(r["requests"]),
            f"{r['student_share']:.0%}",
            f"{float(r['spend_usd']):.4f}",
            f"{float(r['baseline_usd']):.4f}",
        )
    return Group(
        f"[bold]flywheel demo[/bold] · student: {student.why} · {sent} requests sent",
        phases,
        money,
    )


async def _run(
    opts: Options,
    gw: GatewayThread,
    student: Student,
    console: Console,
    traffic: Traffic,
    trigger: int,
) -> tuple[Progress, int, str | None]:
    """Traffic and phases together; returns the final progress, requests sent and the stall
    message (None when every phase finished)."""
    bounds = Bounds.of(opts.quick, opts.phase_bound)
    route = gw.state.router.route_named(ROUTE)
    assert route is not None
    canary_needed = route.rollout.canary_min_examples
    distiller = next(c for c in gw.companions if isinstance(c, DistillerThread))
    runs = gw.state.config.data_dir / "models" / ROUTE / CANDIDATE
    clients = [openai.AsyncOpenAI(base_url=gw.base_url, api_key=k, max_retries=3) for k in KEYS]
    progress = Progress()
    sent = 0
    stall: str | None = None
    run: dict[str, Any] = {}
    rate = 15.0 if opts.quick else 10.0

    async def one(i: int) -> None:
        call = traffic.next()
        messages: Any = call.messages
        await clients[i % len(clients)].chat.completions.create(
            model=call.model, messages=messages, temperature=0
        )
        if call.workload == ROUTE and progress.phase == "steady":
            progress.steady_sent += 1

    async def drive() -> None:
        nonlocal sent
        pending: set[asyncio.Task[None]] = set()
        while progress.phase != "done" and stall is None:
            task = asyncio.create_task(one(sent))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
            await asyncio.sleep(1 / rate)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    driver = asyncio.create_task(drive())
    store = gw.state.store
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while not driver.done():
            await asyncio.sleep(1.0)
            worker = distiller.worker
            last = next(
                (s for s in (worker.last if worker else []) if s.get("route") == ROUTE), None
            )
            try:
                await asyncio.to_thread(
                    advance, progress, store, last, trigger, bounds, canary_needed, runs
                )
            except Stalled as e:
                stall = str(e)
            run = await asyncio.to_thread(whole_run, store)
            live.update(_screen(progress, bounds, student, sent, run))
    await driver
    for c in clients:
        await c.close()
    return progress, sent, stall


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run_demo(opts: Options) -> int:
    """The demo, start to summary; returns the exit code (0 done, 3 a phase stalled)."""
    if not port_free(opts.port):
        raise DemoError(
            f"port {opts.port} is taken (another gateway, or a demo with --keep-serving?): "
            f"stop it, or give another one: flywheel demo --port {opts.port + 1}"
        )
    prepare_dir(opts.data_dir)
    log_path = opts.data_dir / "demo.log"
    student = choose_student()
    quiet = _Quiet(log_path)
    terminal = sys.stdout if opts.verbose else quiet.__enter__()
    console = Console(file=terminal)
    gw: GatewayThread | None = None
    try:
        traffic = Traffic(seed=7)
        # The teacher answers from the generator's ground truth: it is always right.
        # A frontier model's latency (p99 ~2 s): the student must beat it to be promoted.
        teacher = LocalTeacher(traffic.truth, (0.5, 2.0))
        trigger = opts.trigger or (200 if opts.quick else 300)
        config = demo_config(
            opts.data_dir, teacher.start(), opts.quick, opts.port, student, trigger
        )
        console.print(f"student: {student.kind} on {student.base}: {student.why}")
        # A busy machine can take a minute to start the store and the student server.
        gw = GatewayThread(config, opts.port)
        try:
            gw.start(timeout_s=300)
        except RuntimeError:
            console.print(f"[bold red]The gateway did not start[/bold red]: see {log_path}")
            return 3
        t0 = time.monotonic()
        progress, sent, stall = asyncio.run(_run(opts, gw, student, console, traffic, trigger))
        # Audits and shadow calls answered before the last user request may still be in
        # flight (a teacher call takes up to 2 s): their rows belong in the figures.
        settle_by = time.monotonic() + 30
        while gw.state.background and time.monotonic() < settle_by:
            time.sleep(0.05)
        gw.state.writer.flush(30)
        result = _summary(gw, progress, sent, stall, time.monotonic() - t0, config.clickhouse_dsn)
        _print(console, result, opts, config.clickhouse_dsn, log_path)
        if opts.report:
            opts.report.write_text(json.dumps(result, indent=2, default=str))
        if opts.keep_serving:
            console.print(f"gateway still serving at {gw.base_url}; Ctrl-C to stop")
            while True:
                time.sleep(3600)
        return 3 if stall else 0
    except KeyboardInterrupt:
        console.print("stopped.")
        return 130
    finally:
        if gw is not None:
            gw.stop(30)
            gw.state.store.close()
        if not opts.verbose:
            quiet.__exit__()


def _summary(
    gw: GatewayThread,
    progress: Progress,
    sent: int,
    stall: str | None,
    seconds: float,
    dsn: str,
) -> dict[str, Any]:
    store = gw.state.store
    phases = {
        name: round(began - progress.started["collect"], 1)
        for name, began in progress.started.items()
    }
    return {
        "requests_sent": sent,
        "seconds": round(seconds, 1),
        "phase_started_after_s": phases,
        "stalled": stall,
        "steady": steady_state(store, progress.promoted_at) if progress.promoted_at else None,
        "whole_run": whole_run(store),
        "dashboard": f"{gw.base_url.removesuffix('/v1')}/dashboard",
        "clickhouse": dsn,
    }


def _usd(amount: str) -> str:
    """A dollar amount (a Decimal's text) to the hundredth of a cent, as Decimal: no float."""
    return f"${Decimal(amount).quantize(Decimal('0.0001'))}"


def _print(
    console: Console, result: dict[str, Any], opts: Options, dsn: str, log_path: Path
) -> None:
    steady, run = result["steady"], result["whole_run"]
    if result["stalled"]:
        console.print(f"[bold red]The demo stopped:[/bold red] {result['stalled']}")
    if steady:
        agreement = steady["audit_agreement"]
        console.print(
            f"[bold]Steady state on `{ROUTE}` after promotion[/bold] ({steady['requests']} "
            f"requests): the student served {steady['student_share']:.0%}; audited agreement "
            f"{'–' if agreement is None else f'{agreement:.1%}'} over {steady['audits']} "
            f"audits; ${steady['cost_per_1000_usd']} per 1,000 requests against the "
            f"teacher's ${steady['teacher_cost_per_1000_usd']}: "
            f"[bold]{steady['cut_percent']}% cut[/bold] (audits and escalations included)."
        )
    began = ", ".join(f"{name} at {at:g} s" for name, at in result["phase_started_after_s"].items())
    console.print(
        f"Whole run ({result['requests_sent']} requests, {result['seconds']:.0f} s; phases: "
        f"{began}): spend {_usd(run['spend_usd'])} against the teacher baseline "
        f"{_usd(run['baseline_usd'])}, {run['savings_percent']}% saved, flywheel overhead "
        f"{_usd(run['overhead_usd'])} (audits, escalations, rejected student answers)."
    )
    other = run["routes"].get("assistant")
    if other:
        console.print(
            f"`assistant` (open-ended writing): {other['requests']} requests, served by "
            f"{', '.join(other['served_by'])}: it stays on the teacher."
        )
    keep = "" if opts.keep_serving else " (run with --keep-serving to keep it up)"
    # While the gateway serves it holds the embedded store: ask it; once stopped, the store.
    source = (
        f"--url http://127.0.0.1:{opts.port} --key {ADMIN_KEY}"
        if opts.keep_serving
        else f"--dsn {dsn}"
    )
    console.print(
        f"Next: the dashboard at {result['dashboard']}, signed in with {ADMIN_KEY}{keep}; "
        f"`flywheel report {source}`; "
        f'`flywheel query {source} "SELECT route, served_by, count() FROM requests GROUP '
        f'BY ALL"`. Library logs: {log_path}.'
    )
