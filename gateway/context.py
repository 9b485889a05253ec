"""One request's context: what every step of the request path reads and writes.

Invariant: a request reads `state.router` once, into `ctx.router`, and every step uses that
snapshot, so a policy swap or state refresh never changes a decision half-way. `finish` is
the one exit through which a request's row is written, and it writes at most once; the
handler (`openai_api.handle`) and a streamed response's wrapper (`stream_relay`) call it on
every path a step did not, exceptions and disconnects included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from uuid_utils import uuid7

from contracts.openai_shapes import event_json
from contracts.states import RowStatus
from gateway.auth import Principal
from gateway.budgets import Reservation
from gateway.guardrails.engine import RouteRails
from gateway.request_log import Endpoint, RequestRecord
from gateway.routing import Decision, Router
from gateway.state import GatewayState
from gateway.surfaces import Surface


@dataclass(slots=True, eq=False)
class RequestContext:
    state: GatewayState
    router: Router  # the snapshot this request decides and finishes with
    principal: Principal
    record: RequestRecord
    headers: dict[str, str]  # sent with the response, whatever it is
    body: dict[str, Any] = field(default_factory=dict)  # as the client sent it
    upstream_body: dict[str, Any] = field(default_factory=dict)  # what the model is sent
    decision: Decision | None = None
    rails: RouteRails | None = None
    finished: bool = False
    streaming: bool = False  # a streamed response owns finishing from here on
    unrecorded: bool = False  # the journal could not take the row: withhold the answer
    surface: Surface | None = None  # the API the client speaks (translated at the edge)
    cache_key: str = ""  # set when this request may be answered from / stored in the cache
    # (context key, last user text) when the route's semantic cache may match this request
    semantic: tuple[str, str] | None = None
    reservation: Reservation | None = None  # cost held on the budgets covering it
    upstream_headers: dict[str, str] = field(default_factory=dict)  # its rate-limit state
    # The app's own API headers a pass-through forwards (`anthropic-beta`, `anthropic-version`)
    client_api_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def begin(cls, state: GatewayState, principal: Principal, endpoint: Endpoint) -> RequestContext:
        record = RequestRecord(
            request_id=str(uuid7()),
            endpoint=endpoint,
            app=principal.app,
            team=principal.team,
            key_id=principal.key_id,
            consent=principal.train_on_traffic,
        )
        return cls(state, state.router, principal, record, {"x-request-id": record.request_id})

    @property
    def endpoint(self) -> Endpoint:
        return self.record.endpoint

    @property
    def chosen(self) -> Decision:
        """The decision; only steps after routing ask for it."""
        assert self.decision is not None, "no routing decision yet"
        return self.decision

    def decide(self, decision: Decision) -> None:
        """Adopt a decision (the router's, or an escalation of it) and record it."""
        self.decision = decision
        rec = self.record
        rec.route = decision.route.name
        rec.teacher_model = decision.route.teacher
        rec.policy_version = decision.policy_version
        rec.served_model = decision.primary.model_name
        rec.served_by = decision.primary.served_by
        rec.route_reason = decision.primary.reason

    def finish(self, status: RowStatus, http_status: int) -> None:
        """Write the request's row with its metrics; a second call does nothing."""
        if self.finished:
            return
        self.finished = True
        rec = self.record
        rec.finish(status, http_status)
        m = self.state.metrics
        if status == "rejected":
            m.errors.labels(status).inc()
        else:
            m.requests.labels(rec.route, rec.served_model, status).inc()
            m.latency.labels(rec.route).observe(rec.latency_us / 1e6)
            if status == "ok" and not rec.is_stream:
                m.overhead.observe(max(0, rec.latency_us - rec.upstream_us) / 1e6)
            if status != "ok":
                m.errors.labels(status).inc()
        writer = self.state.writer
        refuse = writer.config.when_unrecordable == "refuse"
        if not writer.submit(rec, _withheld if refuse and status == "ok" else None):
            self.unrecorded = refuse
        self._settle()

    def _settle(self) -> None:
        """Shared counters learn what the request really used (in the background: they may
        live in Redis): the route's token bucket and the budgets' held estimate."""
        state, rec = self.state, self.record
        limit = self.decision.route.rate_limit if self.decision is not None else None
        if limit is not None and limit.tokens_per_minute:
            state.spawn(
                state.limiter.charge_tokens(rec.key_id, rec.route, limit, usage_tokens(rec))
            )
        if self.reservation is not None:
            state.spawn(state.budgets.settle(self.reservation, rec.cost_nano))


def _withheld(rec: RequestRecord) -> None:
    """The row of an answer the gateway will not send: it could not be made durable."""
    rec.status, rec.http_status = "rejected", 503
    rec.error = "answer withheld: the request journal could not record it"
    rec.route_reason = "rejected after routing: log_unavailable"


def usage_tokens(rec: RequestRecord) -> int:
    """Total tokens the upstream reported for this request (0 when it reported none)."""
    if rec.response is not None:
        usage = rec.response.get("usage") or {}
        return int(usage.get("total_tokens") or 0) if isinstance(usage, dict) else 0
    for event in reversed(rec.events or []):
        if b'"usage"' in event:
            usage = (event_json(event) or {}).get("usage") or {}
            return int(usage.get("total_tokens") or 0)
    return 0
