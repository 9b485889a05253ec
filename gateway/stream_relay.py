"""Streamed answers: relayed event by event from the upstream, or (when output checks must
see the whole answer first) answered in full, checked, and replayed as a stream.

Invariant: the relay never raises into Starlette; an upstream failure mid-stream becomes an
SSE error event, a client that hangs up is logged as `client_disconnect`. The closing
`[DONE]` is sent only after the row is recorded, so a stream that ended is a recorded one.
Once a streamed response is handed to Starlette it owns finishing the row (`_LoggedStream`),
also when its body never ran.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from contracts.openai_shapes import DONE, assemble_chat, event_json, is_usage_only, without_stream
from gateway import dispatch
from gateway.caching import cache_store
from gateway.context import RequestContext
from gateway.guardrails.apply import blocked, guard_output
from gateway.outcome import failed_upstream, status_of, unrecordable, upstream_error
from gateway.output_checks import checked, maybe_audit
from gateway.streaming import replay, sse_events
from gateway.upstream import UpstreamError, UpstreamStream


class _LoggedStream(StreamingResponse):
    """A stream whose row is written however it ends: the relay finishes it normally; this
    is the backstop for a body that never started (the client left before the first byte)."""

    def __init__(self, ctx: RequestContext, content: AsyncIterator[bytes]) -> None:
        ctx.headers["cache-control"] = "no-cache"
        super().__init__(content, media_type="text/event-stream", headers=ctx.headers)
        ctx.streaming = True
        self._ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self._ctx.finished:
                self._ctx.record.error = self._ctx.record.error or "client disconnected"
                self._ctx.finish("client_disconnect", 499)


async def relay_stream(ctx: RequestContext) -> Response:
    body, upstream_body = ctx.body, ctx.upstream_body
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    # Always ask for usage so the row is priced from real token counts; the extra chunk is
    # dropped again for clients that did not ask for it.
    upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    t_call = time.perf_counter()
    try:
        upstream = await dispatch.stream(ctx, upstream_body)
    except UpstreamError as e:
        return failed_upstream(ctx, e, t_call)

    def after(answer: dict[str, Any]) -> None:
        maybe_audit(ctx, upstream_body, answer)

    flag_rails = ctx.rails is not None and bool(ctx.rails.spec.output)
    return _LoggedStream(
        ctx,
        _relay(
            ctx,
            upstream,
            t_call,
            wants_usage,
            after if ctx.chosen.audit else None,
            check_output=flag_rails,
        ),
    )


async def checked_stream(ctx: RequestContext, cached: dict[str, Any] | None = None) -> Response:
    """The whole answer first (from the upstream, or the cache), checked, then streamed."""
    rec = ctx.record
    plain = without_stream(ctx.upstream_body)
    t_call = time.perf_counter()
    try:
        answer = cached if cached is not None else orjson.loads(await dispatch.call(ctx, plain))
    except (UpstreamError, orjson.JSONDecodeError) as e:
        uerr = e if isinstance(e, UpstreamError) else UpstreamError("http", "not JSON", 502)
        return failed_upstream(ctx, uerr, t_call)
    answer["id"] = rec.request_id
    try:
        answer, verdict = await checked(ctx, answer)
    except UpstreamError as e:
        return failed_upstream(ctx, e)
    if verdict is not None:
        return blocked(ctx, verdict)
    if not (ctx.body.get("stream_options") or {}).get("include_usage"):
        answer.pop("usage", None)
    rec.is_stream = True
    return _LoggedStream(ctx, _relay(ctx, replay(answer), t_call, wants_usage=True))


async def _relay(
    ctx: RequestContext,
    upstream: UpstreamStream,
    t_call: float,
    wants_usage: bool,
    after: Callable[[dict[str, Any]], None] | None = None,
    check_output: bool = False,
) -> AsyncIterator[bytes]:
    """Pass events through as they come; rewrite the upstream id to ours; never raise into
    Starlette (an upstream failure mid-stream becomes an SSE error event)."""
    rec = ctx.record
    events: list[bytes] = []
    rec.events = events
    our_id = b'"' + rec.request_id.encode() + b'"'
    upstream_id: bytes | None = None
    status, http_status = "ok", 200
    done = False
    try:
        async for event in sse_events(aiter(upstream)):
            if not rec.ttft_us:
                rec.ttft_us = int((time.perf_counter() - rec.t0) * 1e6)
            if event.startswith(DONE):
                done = True  # sent once the row is recorded: the answer is complete then
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
        if check_output and status == "ok":
            # Flag-only output rails on a stream: checked once the answer is complete.
            await guard_output(ctx, assemble_chat(events)[0])
        ctx.finish(status, http_status)  # type: ignore[arg-type]
    if ctx.unrecorded:
        yield b"data: " + orjson.dumps(unrecordable(ctx.state).body()) + b"\n\n"
        return
    if status == "ok":
        cache_store(ctx, assemble_chat(events)[0])
    if done:
        yield DONE + b"\n\n"
    if after is not None and status == "ok":
        after(assemble_chat(events)[0])
