"""Prometheus metrics, on a registry owned by the app (no process-global collectors).

`gateway_overhead_seconds` is the request's latency minus the time spent waiting on the
upstream: what the gateway itself adds.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "flywheel_requests", "Requests answered", ["route", "model", "status"], registry=r
        )
        self.errors = Counter("flywheel_errors", "Errors by kind", ["kind"], registry=r)
        self.latency = Histogram(
            "flywheel_request_latency_seconds",
            "End-to-end latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "flywheel_gateway_overhead_seconds",
            "Latency added by the gateway (total minus upstream wait)",
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "flywheel_tokens", "Tokens by direction", ["direction", "model"], registry=r
        )
        self.cost = Counter(
            "flywheel_cost_usd", "Spend in USD (approximate)", ["model"], registry=r
        )
        self.log_queue_depth = Gauge(
            "flywheel_log_queue_depth", "Rows recorded but not yet in ClickHouse", registry=r
        )
        self.journal_writable = Gauge(
            "flywheel_journal_writable",
            "1 while the request journal takes rows; 0 while the gateway refuses traffic",
            registry=r,
        )
        self.journal_errors = Counter(
            "flywheel_journal_errors", "Rows the request journal could not take", registry=r
        )
        self.rows_dropped = Counter(
            "flywheel_rows_dropped",
            "Rows lost: journal unavailable and the memory queue full",
            ["table"],
            registry=r,
        )
        self.budget_exceeded = Counter(
            "flywheel_budget_exceeded",
            "Requests past a budget: refused (hard) or flagged (soft)",
            ["budget", "kind"],
            registry=r,
        )
        self.redis_up = Gauge(
            "flywheel_redis_up", "1 while shared state (Redis) answers, 0 when not", registry=r
        )
        self.cache_lookups = Counter(
            "flywheel_cache_lookups", "Response cache lookups", ["route", "result"], registry=r
        )
        self.thread_restarts = Counter(
            "flywheel_thread_restarts",
            "Background threads found dead and restarted",
            ["thread"],
            registry=r,
        )
        self.rows_written = Counter(
            "flywheel_rows_written", "Rows inserted into ClickHouse", ["table"], registry=r
        )
        self.insert_failures = Counter(
            "flywheel_log_insert_failures",
            "ClickHouse inserts refused or timed out (their rows wait in the journal)",
            registry=r,
        )
        self.rows_replayed = Counter(
            "flywheel_rows_replayed",
            "Rows inserted after waiting through a ClickHouse failure",
            registry=r,
        )

        self.policy_valid = Gauge(
            "flywheel_policy_valid",
            "1 when the last policy edit loaded, 0 when rejected",
            registry=r,
        )
        self.policy_reload_errors = Counter(
            "flywheel_policy_reload_errors", "Policy edits rejected", registry=r
        )
        self.student_healthy = Gauge(
            "flywheel_student_healthy",
            "1 while a candidate student answers, 0 after a 404 or failures in a row",
            ["route", "candidate"],
            registry=r,
        )
        self.student_errors = Counter(
            "flywheel_student_errors",
            "Failed calls to a candidate student on the user path",
            ["route", "candidate"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
