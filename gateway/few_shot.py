"""Few-shot candidates on the request path: the index each serving run uses, loaded before
the router may pick it, and the request's body with its nearest examples put in.

Invariant: a few-shot target's body always carries the examples of the run the router's
snapshot names; when that run's index is not in memory the call fails like an unreachable
student (`UpstreamError`), so the teacher answers and nothing is sent without its examples.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from contracts.policy import Candidate, Route
from contracts.states import CandidateState
from gateway.upstream import UpstreamError
from store import Store, StoreUnavailable
from students.few_shot import FewShotIndex

log = logging.getLogger("flywheel.few_shot")

# States in which a candidate is called (shadow copies included): its index must be loaded.
_CALLED: tuple[CandidateState, ...] = ("shadow", "canary", "promoted")
ARTIFACT_SQL = (
    "SELECT argMax(artifact_path, updated_at) FROM training_runs "
    "WHERE run_id = {r:String} AND status = 'succeeded'"
)

Key = tuple[str, str]
Loaded = dict[Key, tuple[str, FewShotIndex]]


def few_shot_candidate(route: Route, name: str) -> Candidate | None:
    for c in route.candidates:
        if c.name == name and c.kind == "few_shot":
            return c
    return None


async def load_indexes(
    store: Store,
    routes: Iterable[Route],
    states: dict[Key, CandidateState],
    runs: dict[Key, str],
    loaded: Loaded,
) -> None:
    """Load the index of every few-shot run that is called, in place, off the event loop.
    A run whose index fails to load stays unloaded (its calls fall back) and is tried again
    on the next refresh."""
    for route in routes:
        for cand in route.candidates:
            key = (route.name, cand.name)
            run = runs.get(key, "")
            if cand.kind != "few_shot" or states.get(key) not in _CALLED or not run:
                continue
            if loaded.get(key, ("", None))[0] == run:
                continue
            try:
                rows = await asyncio.to_thread(store.query_rows, ARTIFACT_SQL, {"r": run})
                location = str(rows[0][0]) if rows and rows[0][0] else ""
                if not location:
                    continue
                index = await asyncio.to_thread(FewShotIndex.load, location)
            except (StoreUnavailable, OSError, ValueError, KeyError) as e:
                log.warning("few-shot index of %s/%s (run %s) not loaded: %s", *key, run, e)
                continue
            loaded[key] = (run, index)
            log.info("few-shot %s/%s: %d examples (%s)", *key, len(index.shots), index.retriever)


async def with_examples(
    loaded: Loaded, route: Route, candidate: str, run: str, body: dict[str, Any]
) -> dict[str, Any]:
    """`body` with the run's nearest examples before the conversation."""
    have = loaded.get((route.name, candidate))
    if have is None or have[0] != run:
        raise UpstreamError("connect", f"few-shot index of {candidate} ({run}) is not loaded")
    index = have[1]
    messages = body.get("messages") or []
    if index.retriever == "ngram":
        prompt = index.prompt(messages)
    else:  # encoding the query with a transformer takes milliseconds: off the loop
        prompt = await asyncio.to_thread(index.prompt, messages)
    return {**body, "messages": prompt}
