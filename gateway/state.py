"""The one place the running gateway keeps its state (no module-level mutable globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from flywheel.store import Store
from gateway.auth import KeyRing
from gateway.config import GatewayConfig
from gateway.log_writer import LogWriter
from gateway.metrics import GatewayMetrics
from gateway.pricing import Price
from gateway.routing import Router
from gateway.spool import Spool
from gateway.upstream import Upstreams


@dataclass
class GatewayState:
    config: GatewayConfig
    keys: KeyRing
    router: Router
    prices: dict[str, Price]
    metrics: GatewayMetrics
    store: Store
    spool: Spool
    writer: LogWriter
    upstreams: Upstreams
    health_cache: dict[str, object] = field(default_factory=dict)
