"""Streamed answers: relayed event by event from the upstream, or (when output checks must
see the whole answer first) answered in full, checked, and replayed as a stream.

Invariant: the relay never raises into Starlette; an upstream failure mid-stream becomes an
SSE error event, a client that hangs up is logged as `client_disconnect`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from gateway import dispatch
from gateway.guardrails.apply import blocked, guard_output
from gateway.guardrails.engine import RouteRails
from gateway.outcome import failed_upstream, log_request, status_of, upstream_error
from gateway.output_checks import checked, maybe_audit
from gateway.request_log import RequestRecord
from gateway.routing import Decision
from gateway.state import GatewayState
from gateway.streaming import (
    DONE,
    assemble_chat,
    event_json,
    is_usage_only,
    replay,
    sse_events,
    without_stream,
)
from gateway.upstream import UpstreamError, UpstreamStream


async def relay_stream(
    state: GatewayState,
    rec: RequestRecord,
    decision: Decision,
    endpoint: str,
    body: dict[str, Any],
    upstream_body: dict[str, Any],
    headers: dict[str, str],
) -> Response:
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    # Always ask for usage so the row is priced from real token counts; the extra chunk is
    # dropped again for clients that did not ask for it.
    upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    t_call = time.perf_counter()
    try:
        upstream = await dispatch.stream(state, decision, rec, endpoint, upstream_body)
    except UpstreamError as e:
        return failed_upstream(state, rec, e, headers, t_call)
    headers["cache-control"] = "no-cache"

    def after(answer: dict[str, Any]) -> None:
        plain = without_stream(upstream_body)
        maybe_audit(state, decision, rec, endpoint, plain, answer)

    rails = state.router.rails.get(decision.route.name)
    return StreamingResponse(
        _relay(
            state,
            rec,
            upstream,
            t_call,
            wants_usage,
            after if decision.audit else None,
            rails if rails is not None and rails.spec.output else None,
        ),
        media_type="text/event-stream",
        headers=headers,
    )


async def checked_stream(
    state: GatewayState,
    rec: RequestRecord,
    decision: Decision,
    endpoint: str,
    body: dict[str, Any],
    upstream_body: dict[str, Any],
    headers: dict[str, str],
    rails: RouteRails | None,
) -> Response:
    plain = without_stream(upstream_body)
    t_call = time.perf_counter()
    try:
        answer = orjson.loads(await dispatch.call(state, decision, rec, endpoint, plain))
    except (UpstreamError, orjson.JSONDecodeError) as e:
        uerr = e if isinstance(e, UpstreamError) else UpstreamError("http", "not JSON", 502)
        return failed_upstream(state, rec, uerr, headers, t_call)
    answer["id"] = rec.request_id
    try:
        answer, verdict = await checked(state, decision, rec, body, plain, answer, rails)
    except UpstreamError as e:
        return failed_upstream(state, rec, e, headers)
    if verdict is not None and rails is not None:
        response, status = blocked(rails, rec, verdict, headers)
        log_request(state, rec, "guardrail_blocked", status)
        return response
    if not (body.get("stream_options") or {}).get("include_usage"):
        answer.pop("usage", None)
    rec.is_stream = True
    headers["cache-control"] = "no-cache"
    return StreamingResponse(
        _relay(state, rec, replay(answer), t_call, wants_usage=True),
        media_type="text/event-stream",
        headers=headers,
    )


async def _relay(
    state: GatewayState,
    rec: RequestRecord,
    upstream: UpstreamStream,
    t_call: float,
    wants_usage: bool,
    after: Callable[[dict[str, Any]], None] | None = None,
    flag_rails: RouteRails | None = None,
) -> AsyncIterator[bytes]:
    """Pass events through as they come; rewrite the upstream id to ours; never raise into
    Starlette (an upstream failure mid-stream becomes an SSE error event)."""
    events: list[bytes] = []
    rec.events = events
    our_id = b'"' + rec.request_id.encode() + b'"'
    upstream_id: bytes | None = None
    status, http_status = "ok", 200
    try:
        async for event in sse_events(aiter(upstream)):
            if not rec.ttft_us:
                rec.ttft_us = int((time.perf_counter() - rec.t0) * 1e6)
            if event.startswith(DONE):
                yield DONE + b"\n\n"
                continue
            events.append(event)
            if upstream_id is None:
                first = event_json(event) or {}
                upstream_id = b'"' + str(first.get("id", "")).encode() + b'"'
            if not wants_usage and is_usage_only(event):
                continue
            if upstream_id != b'""':
                event = event.replace(upstream_id, our_id, 1)
            yield event + b"\n\n"
    except UpstreamError as e:
        err = upstream_error(e)
        status, http_status = status_of(e), err.status
        rec.error = e.message
        yield b"data: " + orjson.dumps(err.body()) + b"\n\n"
    except (asyncio.CancelledError, GeneratorExit):
        status, http_status = "client_disconnect", 499
        rec.error = "client disconnected mid-stream"
        upstream.close()
        raise
    finally:
        rec.upstream_us = int((time.perf_counter() - t_call) * 1e6)
        if flag_rails is not None and status == "ok":
            # Flag-only output rails on a stream: checked once the answer is complete.
            await guard_output(flag_rails, rec, assemble_chat(events)[0])
        log_request(state, rec, status, http_status)
    if after is not None and status == "ok":
        after(assemble_chat(events)[0])
