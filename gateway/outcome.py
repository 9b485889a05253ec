"""How a request ends when it does not end in an answer: upstream failures mapped to the
client's error, rejections, and internal errors, each finishing the request's row.

Invariant: every function here finishes the context (`ctx.finish`) before it returns the
response, so an error the client sees always has its row.
"""

from __future__ import annotations

import time

from starlette.responses import Response

from contracts.errors import ApiError
from contracts.states import RowStatus
from gateway.context import RequestContext
from gateway.guardrails.pii import ENTITIES
from gateway.state import GatewayState
from gateway.upstream import UpstreamError


def upstream_error(e: UpstreamError) -> ApiError:
    """Map an upstream failure to what the client sees; client mistakes keep their status."""
    if e.kind == "timeout" or e.status in (408, 504):
        return ApiError(504, f"Upstream timed out: {e.message}", code="upstream_timeout")
    if e.kind == "connect":
        return ApiError(502, e.message, code="upstream_unreachable")
    if e.status in (400, 413, 422):
        return ApiError(
            400 if e.status == 422 else e.status,
            e.message,
            code=e.code or "upstream_rejected_request",
            param=e.param,
        )
    if e.status == 429:
        return ApiError(
            429,
            f"Upstream rate limit: {e.message}",
            code="upstream_rate_limited",
            headers=e.headers,
        )
    if e.status in (401, 403):
        return ApiError(
            502, "Upstream rejected the gateway's credentials.", code="upstream_auth_failed"
        )
    return ApiError(502, f"Upstream error ({e.status}): {e.message}", code="upstream_error")


def status_of(e: UpstreamError) -> RowStatus:
    return "timeout" if e.kind == "timeout" else "upstream_error"


def fail(ctx: RequestContext, err: ApiError, status: RowStatus) -> Response:
    """Finish the row with `status` and answer with `err`."""
    ctx.record.error = err.message
    ctx.finish(status, err.status)
    return err.response(ctx.headers)


def reject(ctx: RequestContext, err: ApiError) -> Response:
    """A request the gateway refused (bad body, unknown model, rate limit, ...). Refused
    before routing, its route (and so whether it masks) is unknown: its row is masked for
    every entity rather than risk storing raw PII from a masking route."""
    if ctx.decision is None:
        ctx.record.route_reason = "rejected before routing"
        ctx.record.mask_entities = ENTITIES
    else:
        ctx.record.route_reason = f"rejected after routing: {err.code or err.status}"
        if err.code == "insufficient_quota":
            ctx.state.metrics.budget_exceeded.labels(err.message.split("`")[1], "hard").inc()
    return fail(ctx, err, "rejected")


def internal_error(ctx: RequestContext) -> Response:
    """A failure nobody planned for: still one row, still an OpenAI-shaped error."""
    err = ApiError(500, "The gateway hit an internal error.", code="internal_error")
    return fail(ctx, err, "internal_error")


def failed_upstream(ctx: RequestContext, e: UpstreamError, t_call: float | None = None) -> Response:
    """Finish a request the upstream failed and answer the client with the mapped error."""
    if t_call is not None:
        ctx.record.upstream_us = int((time.perf_counter() - t_call) * 1e6)
    err = upstream_error(e)
    ctx.record.error = e.message
    ctx.finish(status_of(e), err.status)
    return err.response(ctx.headers)


def unrecordable(state: GatewayState) -> ApiError:
    """The gateway refuses rather than answer what it cannot record (`log.when_unrecordable`)."""
    return ApiError(
        503,
        "The gateway cannot record requests right now (its request journal is not writable: "
        f"{state.writer.journal_error or 'see /healthz'}); retry shortly.",
        code="log_unavailable",
    )
