"""How a request ends: upstream failures mapped to client errors, and the record that is
logged with its metrics.

Invariant: every authenticated request passes through `log_request` or `log_rejected`
exactly once, so every one of them becomes a row.
"""

from __future__ import annotations

import time

from starlette.responses import Response

from gateway.errors import ApiError
from gateway.request_log import RequestRecord
from gateway.state import GatewayState
from gateway.streaming import event_json
from gateway.upstream import UpstreamError


def upstream_error(e: UpstreamError) -> ApiError:
    """Map an upstream failure to what the client sees; client mistakes keep their status."""
    if e.kind == "timeout" or e.status in (408, 504):
        return ApiError(504, f"Upstream timed out: {e.message}", code="upstream_timeout")
    if e.kind == "connect":
        return ApiError(502, e.message, code="upstream_unreachable")
    if e.status in (400, 413, 422):
        return ApiError(e.status, e.message, code="upstream_rejected_request")
    if e.status == 429:
        return ApiError(429, f"Upstream rate limit: {e.message}", code="upstream_rate_limited")
    if e.status in (401, 403):
        return ApiError(
            502, "Upstream rejected the gateway's credentials.", code="upstream_auth_failed"
        )
    return ApiError(502, f"Upstream error ({e.status}): {e.message}", code="upstream_error")


def status_of(e: UpstreamError) -> str:
    return "timeout" if e.kind == "timeout" else "upstream_error"


def _usage_tokens(rec: RequestRecord) -> int:
    if rec.response is not None:
        usage = rec.response.get("usage") or {}
        return int(usage.get("total_tokens") or 0)
    for event in reversed(rec.events or []):
        if b'"usage"' in event:
            usage = (event_json(event) or {}).get("usage") or {}
            return int(usage.get("total_tokens") or 0)
    return 0


def log_request(state: GatewayState, rec: RequestRecord, status: str, http_status: int) -> None:
    rec.finish(status, http_status)
    route = state.router.route_named(rec.route)
    limit = route.rate_limit if route else None
    if limit is not None and limit.tokens_per_minute:
        state.limiter.charge_tokens(rec.key_id, rec.route, _usage_tokens(rec))
    m = state.metrics
    m.requests.labels(rec.route, rec.served_model, status).inc()
    m.latency.labels(rec.route).observe(rec.latency_us / 1e6)
    if status == "ok" and not rec.is_stream:
        m.overhead.observe(max(0, rec.latency_us - rec.upstream_us) / 1e6)
    if status != "ok":
        m.errors.labels(status).inc()
    state.writer.submit(rec)


def log_rejected(state: GatewayState, rec: RequestRecord, e: ApiError) -> None:
    rec.error = e.message
    rec.route_reason = "rejected before routing"
    rec.finish("rejected", e.status)
    state.metrics.errors.labels("rejected").inc()
    state.writer.submit(rec)


def failed_upstream(
    state: GatewayState,
    rec: RequestRecord,
    e: UpstreamError,
    headers: dict[str, str],
    t_call: float | None = None,
) -> Response:
    """Log a request the upstream failed and answer the client with the mapped error."""
    if t_call is not None:
        rec.upstream_us = int((time.perf_counter() - t_call) * 1e6)
    err = upstream_error(e)
    rec.error = e.message
    log_request(state, rec, status_of(e), err.status)
    return err.response(headers)
