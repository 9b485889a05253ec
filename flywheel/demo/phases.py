"""The demo's phases, each with its own time bound, read from what the flywheel wrote.

collect (curated examples reach the trigger) → train (a run is trained, evaluated, gated and
published: the candidate has a state) → canary (audits of its answers reach the promotion
bar) → steady (the promoted student serves a stretch of traffic). A phase that runs past its
bound, or a candidate that fails, stops the demo with a sentence that names the phase and the
figure that was short.

Invariant: progress comes from ClickHouse and the distiller's own last pass, never from the
demo's counters, so what the screen says is what the flywheel did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distiller.progress import latest
from flywheel.demo.config import CANDIDATE, ROUTE
from store import Store

PhaseName = Literal["collect", "train", "canary", "steady", "done"]


@dataclass(frozen=True)
class Bounds:
    """Seconds each phase may take, and the steady stretch's length in requests."""

    collect: float
    train: float
    canary: float
    steady_requests: int
    steady: float

    @classmethod
    def of(cls, quick: bool, cap: float | None = None) -> Bounds:
        """The bounds for `--quick` or a full run; `cap` lowers every time bound to it."""
        if quick:
            b = cls(collect=75, train=120, canary=60, steady_requests=150, steady=60)
        else:
            b = cls(collect=120, train=300, canary=120, steady_requests=600, steady=180)
        if cap is None:
            return b
        return cls(
            min(b.collect, cap),
            min(b.train, cap),
            min(b.canary, cap),
            b.steady_requests,
            min(b.steady, cap),
        )


class Stalled(Exception):
    """A phase hit its bound or the candidate cannot go on; the message says why."""


@dataclass
class Progress:
    phase: PhaseName = "collect"
    detail: str = "sending traffic"
    started: dict[str, float] = field(default_factory=dict)  # phase -> time.monotonic()
    promoted_at: float | None = None  # wall clock (epoch seconds), from ClickHouse
    steady_sent: int = 0
    done: float = 0.0  # how far the current phase is towards its goal, 0..1


STATE_SQL = (
    "SELECT argMax(state, updated_at) AS state, argMax(reason, updated_at) AS reason, "
    "toUnixTimestamp64Milli(max(updated_at)) AS at FROM candidate_states "
    "WHERE route = {r:String} AND candidate = {c:String}"
)
HELD_SQL = (
    "SELECT argMax(reason, at) AS reason, count() AS n FROM events "
    "WHERE route = {r:String} AND candidate = {c:String} AND kind = 'promotion_held'"
)
DATASETS_SQL = "SELECT count() AS n FROM datasets WHERE route = {r:String}"
AUDITS_SQL = (
    "SELECT count() AS n, avg(agreement) AS agreement FROM audits "
    "WHERE route = {r:String} AND candidate = {c:String}"
)
EVAL_SQL = (
    "SELECT argMax(agreement, created_at) AS agreement, argMax(wilson_lower, created_at) AS "
    "lower, argMax(coverage, created_at) AS coverage, argMax(threshold, created_at) AS "
    "threshold FROM eval_reports WHERE route = {r:String} AND candidate = {c:String}"
)


def _collect_detail(last: dict[str, Any] | None, trigger: int) -> tuple[str, bool]:
    """(what collection stands at, whether a dataset was built)."""
    if last is None:
        return "sending traffic; the distiller has not looked yet", False
    if "dataset_id" in last:
        return f"dataset {last['dataset_id']}: {last['train']} train, {last['eval']} eval", True
    excluded = last.get("excluded") or {}
    return (
        f"curated {last.get('new_examples', 0)} of the {trigger} examples the trigger needs: "
        f"{excluded.get('duplicate', 0)} exact and {excluded.get('near_duplicate', 0)} "
        "near-duplicates dropped",
        False,
    )


def advance(
    progress: Progress,
    store: Store,
    last: dict[str, Any] | None,
    trigger: int,
    bounds: Bounds,
    canary_needed: int,
    runs: Path,
) -> Progress:
    """Move the demo's phase along from what the flywheel wrote; raises Stalled."""
    now = time.monotonic()
    progress.started.setdefault(progress.phase, now)
    row = store.query_dicts(STATE_SQL, {"r": ROUTE, "c": CANDIDATE})[0]
    state = str(row["state"] or "")
    if progress.phase == "collect":
        progress.detail, built = _collect_detail(last, trigger)
        # The dataset row is written before training starts: from then on it is training.
        built = built or int(store.query_dicts(DATASETS_SQL, {"r": ROUTE})[0]["n"]) > 0
        progress.done = min(1.0, int((last or {}).get("new_examples", 0)) / max(trigger, 1))
        if built or state:
            progress.phase = "train"
            progress.started["train"] = now
            progress.detail = "training, evaluating and gating the student"
            progress.done = 0.0
        elif now - progress.started["collect"] > bounds.collect:
            raise Stalled(f"collect stalled after {bounds.collect:.0f} s: {progress.detail}")
    if progress.phase == "train":
        if state in ("failed", "rolled_back"):
            ev = store.query_dicts(EVAL_SQL, {"r": ROUTE, "c": CANDIDATE})[0]
            raise Stalled(
                f"the student failed its gate: agreement {float(ev['agreement'] or 0):.1%} "
                f"(95% lower bound {float(ev['lower'] or 0):.1%}, kept "
                f"{float(ev['coverage'] or 0):.0%}) against the threshold "
                f"{float(ev['threshold'] or 0):.0%} ({row['reason']})"
            )
        if state == "trained":
            raise Stalled(f"the student passed its gate but was not published: {row['reason']}")
        run = latest(runs)
        if run is not None and run["at"] >= time.time() - (now - progress.started["train"]):
            progress.done = min(1.0, run["step"] / max(run["total"], 1))
            loss = "" if run["loss"] is None else f", loss {run['loss']:.3f}"
            verb = "training" if run["stage"] == "train" else "evaluating"
            progress.detail = f"{verb}: step {run['step']} of {run['total']}{loss}"
        if state in ("shadow", "canary", "promoted"):
            progress.phase = "canary"
            progress.started["canary"] = now
            progress.done = 0.0
        elif now - progress.started["train"] > bounds.train:
            raise Stalled(
                f"train stalled: no gate decision within {bounds.train:.0f} s of the dataset "
                "(a busy machine trains slower: see the log)"
            )
    if progress.phase == "canary":
        audits = store.query_dicts(AUDITS_SQL, {"r": ROUTE, "c": CANDIDATE})[0]
        n, agreement = int(audits["n"]), float(audits["agreement"] or 0)
        progress.detail = f"{state}: {n} audits ({canary_needed} needed), agreement {agreement:.0%}"
        progress.done = min(1.0, n / max(canary_needed, 1))
        held = store.query_dicts(HELD_SQL, {"r": ROUTE, "c": CANDIDATE})[0]
        if int(held["n"]) and n >= canary_needed:
            progress.detail += f"; promotion held: {held['reason']}"
        if state == "rolled_back":
            raise Stalled(f"the student was rolled back: {row['reason']}")
        if state == "promoted":
            progress.phase = "steady"
            progress.started["steady"] = now
            progress.promoted_at = int(row["at"]) / 1000
        elif now - progress.started["canary"] > bounds.canary:
            raise Stalled(f"canary stalled after {bounds.canary:.0f} s: {progress.detail}")
    if progress.phase == "steady":
        progress.detail = (
            f"promoted: {progress.steady_sent} of {bounds.steady_requests} steady requests"
        )
        progress.done = min(1.0, progress.steady_sent / bounds.steady_requests)
        if progress.steady_sent >= bounds.steady_requests:
            progress.phase = "done"
        elif now - progress.started["steady"] > bounds.steady:
            raise Stalled(
                f"steady stalled: {progress.steady_sent} of {bounds.steady_requests} requests "
                f"answered in {bounds.steady:.0f} s"
            )
    return progress
