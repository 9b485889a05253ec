"""The one place the running gateway keeps its state (no module-level mutable globals).

`router` is replaced whole (policy reload, candidate-state refresh); a request reads it once
and keeps that snapshot, so a swap never changes a decision half-way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from contracts.prompt_index import PromptIndex
from gateway.auth import KeyRing
from gateway.budgets import BudgetBook
from gateway.cache import ResponseCache
from gateway.config import GatewayConfig
from gateway.dashboard.session import Sessions
from gateway.few_shot import Loaded
from gateway.log_writer import LogWriter
from gateway.metrics import GatewayMetrics
from gateway.rate_limit import RateLimiter
from gateway.redis_link import RedisLink
from gateway.routing import Router
from gateway.session_routing import SessionPins
from gateway.student_health import StudentHealth
from gateway.surfaces import Conversations
from gateway.upstream import Upstreams
from store import Store


@dataclass
class GatewayState:
    config: GatewayConfig
    keys: KeyRing
    router: Router
    metrics: GatewayMetrics
    store: Store
    writer: LogWriter
    upstreams: Upstreams
    sessions: Sessions
    students: StudentHealth
    limiter: RateLimiter = field(default_factory=RateLimiter)
    budgets: BudgetBook = field(default_factory=lambda: BudgetBook([]))
    redis: RedisLink | None = None
    worker: int | None = None  # this process's index under `flywheel serve --workers N`
    policy_status: dict[str, Any] = field(default_factory=dict)
    health_cache: dict[str, object] = field(default_factory=dict)
    background: set[asyncio.Future[Any]] = field(default_factory=set)
    conversations: Conversations = field(default_factory=Conversations)
    session_pins: SessionPins = field(default_factory=lambda: SessionPins(100_000, 3600))
    cache: ResponseCache = field(default_factory=ResponseCache)
    # (route, candidate) -> (dataset id, index of its training prompts)
    prompt_indexes: dict[tuple[str, str], tuple[str, PromptIndex]] = field(default_factory=dict)
    # (route, candidate) -> (run id, few-shot index) of the few-shot runs the router may call
    few_shot: Loaded = field(default_factory=dict)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run in the background, keeping a reference so the task is not collected."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
