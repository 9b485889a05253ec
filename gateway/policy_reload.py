"""Keeps the router current: policy files hot-reloaded, candidate states refreshed.

A trained detector's `current.json` (a new version, new per-route thresholds) is watched
like a policy file: the router is rebuilt with it.

Invariant: a changed policy file is validated before it is swapped in, whole and at once; an
invalid edit leaves the previous policy serving and is reported (log, `GET /admin/policies`,
`flywheel_policy_valid`). Candidate states are read from ClickHouse here, in the background,
never per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import orjson

from contracts.openai_shapes import prompt_text
from contracts.policy import PolicyError
from contracts.pricing import price_table
from contracts.prompt_index import PromptIndex
from contracts.states import as_state
from contracts.yaml_source import ConfigError
from gateway.config import GatewayConfig, load_policy_set
from gateway.few_shot import load_indexes
from gateway.guardrails.engine import compile_guardrails
from gateway.guardrails.nemo import NemoRails
from gateway.guardrails.prompt_attack import load_detectors
from gateway.routing import CandidateStates, Router
from gateway.state import GatewayState
from store import StoreUnavailable

log = logging.getLogger("flywheel.policy")

STATES_SQL = (
    "SELECT route, candidate, argMax(state, updated_at), argMax(dataset_id, updated_at), "
    "argMax(min_confidence, updated_at), argMax(version, updated_at) "
    "FROM candidate_states GROUP BY route, candidate"
)
TRAIN_PROMPTS_SQL = (
    "SELECT messages FROM requests WHERE request_id IN "
    "(SELECT request_id FROM dataset_items WHERE dataset_id = {d:String} AND split = 'train')"
)


def _stamp(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), -1, -1))
    return tuple(out)


def build_router(config: GatewayConfig, states: CandidateStates | None = None) -> Router:
    """Load and check every policy, price its models, build its guardrails (nemoguardrails
    engines included); raises PolicyError/ConfigError. Seconds: call off the event loop."""
    policies = load_policy_set(config)
    rails, nemo = compile_guardrails(policies, load_detectors(config.guards_dir(), policies))
    nemo.start()
    return Router(policies, price_table(policies.models), states, rails=rails, nemo=nemo)


class PolicyReloader:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._stamp = _stamp(state.config.watched_paths())
        self._retiring: set[asyncio.Task[None]] = set()

    @staticmethod
    async def _retire(nemo: NemoRails) -> None:
        """Stop a replaced policy's guardrail engines once requests that already hold the
        old router have had time to finish."""
        await asyncio.sleep(30)
        await nemo.stop()

    def mark_loaded(self, router: Router) -> None:
        self.state.policy_status.update(
            status="ok",
            version=router.policy_version,
            files=router.policies.files,
            loaded_at=time.time(),
            last_error=None,
        )
        self.state.metrics.policy_valid.set(1)

    async def check(self) -> bool:
        """Reload when a policy file changed; True when a new policy was swapped in."""
        stamp = _stamp(self.state.config.watched_paths())
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            router = await asyncio.to_thread(
                build_router, self.state.config, self.state.router.states
            )
        except (PolicyError, ConfigError) as e:
            self.state.policy_status.update(
                status="error", last_error=str(e), failed_at=time.time()
            )
            self.state.metrics.policy_valid.set(0)
            self.state.metrics.policy_reload_errors.inc()
            log.error("policy reload rejected, previous policy keeps serving:\n%s", e)
            return False
        await self.state.upstreams.prepare(router.policies.models)
        self.state.writer.prices = router.prices
        old, self.state.router = self.state.router, router
        self.state.budgets.replace(self.state.config.budgets + router.policies.budgets)
        if old.nemo is not None:
            task = asyncio.create_task(self._retire(old.nemo))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        self.mark_loaded(router)
        log.info("policy %s loaded from %s", router.policy_version, router.policies.files)
        return True

    async def refresh_states(self) -> None:
        try:
            rows = await asyncio.to_thread(self.state.store.query_rows, STATES_SQL)
        except StoreUnavailable as e:
            log.debug("candidate states not refreshed: %s", e)
            return
        states = CandidateStates(
            {(str(r[0]), str(r[1])): as_state(str(r[2])) for r in rows},
            {(str(r[0]), str(r[1])): str(r[3]) for r in rows if r[3]},
            {(str(r[0]), str(r[1])): float(r[4]) for r in rows if r[4] is not None},
            {(str(r[0]), str(r[1])): str(r[5]) for r in rows if r[5]},
        )
        # A few-shot run's index is in memory before the router may send it traffic.
        await load_indexes(
            self.state.store,
            self.state.router.policies.routes,
            states.states,
            states.runs,
            self.state.few_shot,
        )
        if states != self.state.router.states:
            self.state.router = self.state.router.with_states(states)
        await self._index_prompts(states)

    async def _index_prompts(self, states: CandidateStates) -> None:
        """Build the novelty index of each serving candidate on a route that asks for one."""
        for route in self.state.router.policies.routes:
            if route.escalation.max_prompt_distance is None:
                continue
            for cand in route.candidates:
                key = (route.name, cand.name)
                dataset = states.datasets.get(key, "")
                if not dataset or self.state.prompt_indexes.get(key, ("", None))[0] == dataset:
                    continue
                try:
                    rows = await asyncio.to_thread(
                        self.state.store.query_rows, TRAIN_PROMPTS_SQL, {"d": dataset}
                    )
                except StoreUnavailable:
                    continue
                prompts = [prompt_text(orjson.loads(r[0])) for r in rows if r[0]]
                index = await asyncio.to_thread(PromptIndex.build, prompts)
                self.state.prompt_indexes[key] = (dataset, index)
                log.info("indexed %d training prompts of %s/%s", len(prompts), *key)

    async def run(self) -> None:
        cfg = self.state.config.router
        next_states = 0.0
        while True:
            try:
                await self.check()
                if time.monotonic() >= next_states:
                    await self.refresh_states()
                    next_states = time.monotonic() + cfg.state_refresh_s
                self.state.writer.ensure_running()
                await self.state.budgets.seed_pending(self.state.store)
            except Exception:
                # The watcher outlives any bad edit or store failure; it says so and goes on.
                log.exception("policy watcher pass failed; it goes on")
            await asyncio.sleep(cfg.policy_reload_s)
