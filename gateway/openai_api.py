"""The OpenAI-compatible endpoints: chat completions, completions, embeddings, models.

Request path: auth → body (size, JSON, types) → route → upstream → response, then one
`RequestRecord` handed to the log writer. Every authenticated request is logged, whatever
its outcome: success, rejection, upstream error, timeout, or a client gone mid-stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from uuid_utils import uuid7

from gateway import dispatch
from gateway.auth import Principal
from gateway.bodies import SCHEMAS, read_json, validate
from gateway.errors import ApiError
from gateway.escalation import prompt_text
from gateway.guardrails.apply import blocked, guard_input, guard_output
from gateway.guardrails.engine import RouteRails
from gateway.request_log import RequestRecord
from gateway.routing import Decision, RequestFacts, fingerprint_system_prompt
from gateway.state import GatewayState
from gateway.streaming import (
    DONE,
    answer_as_events,
    assemble_chat,
    event_json,
    is_usage_only,
    sse_events,
)
from gateway.upstream import UpstreamError, UpstreamStream

# Gateway-only fields never sent upstream.
_GATEWAY_FIELDS = ("metadata", "tags")


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gw
    return state


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


def _status_of(e: UpstreamError) -> str:
    return "timeout" if e.kind == "timeout" else "upstream_error"


async def chat_completions(request: Request) -> Response:
    return await _proxy(request, "chat.completions")


async def completions(request: Request) -> Response:
    return await _proxy(request, "completions")


async def embeddings(request: Request) -> Response:
    return await _proxy(request, "embeddings")


async def list_models(request: Request) -> Response:
    state = _state(request)
    state.keys.authenticate(request.headers)
    data = [
        {"id": alias, "object": "model", "created": 0, "owned_by": "flywheel"}
        for alias in state.router.aliases()
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


def _new_record(principal: Principal, endpoint: str) -> RequestRecord:
    return RequestRecord(
        request_id=str(uuid7()),
        endpoint=endpoint,
        app=principal.app,
        team=principal.team,
        key_id=principal.key_id,
        consent=principal.train_on_traffic,
    )


def _apply_decision(rec: RequestRecord, decision: Decision) -> None:
    rec.route = decision.route.name
    rec.teacher_model = decision.route.teacher
    rec.policy_version = decision.policy_version
    rec.served_model = decision.primary.model_name
    rec.served_by = decision.primary.served_by
    rec.route_reason = decision.primary.reason


async def _proxy(request: Request, endpoint: str) -> Response:
    state = _state(request)
    principal = state.keys.authenticate(request.headers)
    router = state.router  # one snapshot for the whole request
    rec = _new_record(principal, endpoint)
    headers = {"x-request-id": rec.request_id}
    try:
        body = await read_json(request, state.config.server.max_body_bytes)
        rec.request = body
        rec.requested_model = str(body.get("model", ""))
        validate(SCHEMAS[endpoint], body)
        rec.metadata = body.get("metadata") or {}
        rec.tags = body.get("tags") or []
        rec.prompt_fingerprint = fingerprint_system_prompt(body.get("messages"))
        decision = router.decide(
            RequestFacts(
                app=principal.app,
                team=principal.team,
                model=body["model"],
                headers=request.headers,
                metadata=rec.metadata,
                tags=tuple(rec.tags),
                system_fingerprint=rec.prompt_fingerprint,
            )
        )
        rec.route = decision.route.name
        state.limiter.admit(principal.key_id, decision.route.name, decision.route.rate_limit)
    except ApiError as e:
        _log_rejected(state, rec, e)
        return e.response(headers)
    novelty = _novelty_escalation(state, decision, body)
    if novelty is not None:
        decision = decision.escalate(novelty)
    _apply_decision(rec, decision)
    rec.is_stream = bool(body.get("stream"))
    upstream_body = {k: v for k, v in body.items() if k not in _GATEWAY_FIELDS}
    rails = router.rails.get(decision.route.name) if endpoint != "embeddings" else None
    if rails is not None:
        rec.mask_entities = rails.log_mask
        verdict = await guard_input(rails, rec, body, upstream_body)
        if verdict is not None:
            response, status = blocked(rails, rec, verdict, headers)
            _log(state, rec, "guardrail_blocked", status)
            return response
        if rec.is_stream and rails.buffers_output:
            # Output rails that block or mask must read the whole answer before the user
            # does: answer in full, check, then replay it as a stream.
            return await _guarded_stream(
                state, rec, decision, endpoint, body, upstream_body, headers, rails
            )
    if decision.shadow is not None:
        dispatch.spawn(state, dispatch.shadow(state, decision, rec, endpoint, upstream_body))
    if rec.is_stream:
        return await _stream(state, rec, decision, endpoint, body, upstream_body, headers)

    t_call = time.perf_counter()
    try:
        raw = await dispatch.call(state, decision, rec, endpoint, upstream_body)
    except UpstreamError as e:
        rec.upstream_us = int((time.perf_counter() - t_call) * 1e6)
        err = upstream_error(e)
        rec.error = e.message
        _log(state, rec, _status_of(e), err.status)
        return err.response(headers)
    rec.upstream_us = int((time.perf_counter() - t_call) * 1e6)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        err = ApiError(502, "Upstream returned a body that is not JSON.", code="upstream_error")
        rec.error = err.message
        _log(state, rec, "upstream_error", 502)
        return err.response(headers)
    if isinstance(data, dict) and endpoint != "embeddings":
        data["id"] = rec.request_id
    rec.response = data if isinstance(data, dict) else None
    if rails is not None and rec.response is not None:
        verdict = await guard_output(rails, rec, rec.response)
        if verdict is not None:
            response, status = blocked(rails, rec, verdict, headers)
            _log(state, rec, "guardrail_blocked", status)
            return response
    out = orjson.dumps(data)
    _log(state, rec, "ok", 200)
    _maybe_audit(state, decision, rec, endpoint, upstream_body, rec.response)
    return Response(out, media_type="application/json", headers=headers)


async def _guarded_stream(
    state: GatewayState,
    rec: RequestRecord,
    decision: Decision,
    endpoint: str,
    body: dict[str, Any],
    upstream_body: dict[str, Any],
    headers: dict[str, str],
    rails: RouteRails,
) -> Response:
    plain = {k: v for k, v in upstream_body.items() if k not in ("stream", "stream_options")}
    t_call = time.perf_counter()
    try:
        answer = orjson.loads(await dispatch.call(state, decision, rec, endpoint, plain))
    except (UpstreamError, orjson.JSONDecodeError) as e:
        rec.upstream_us = int((time.perf_counter() - t_call) * 1e6)
        uerr = e if isinstance(e, UpstreamError) else UpstreamError("http", "not JSON", 502)
        err = upstream_error(uerr)
        rec.error = uerr.message
        _log(state, rec, _status_of(uerr), err.status)
        return err.response(headers)
    answer["id"] = rec.request_id
    verdict = await guard_output(rails, rec, answer)
    if verdict is not None:
        response, status = blocked(rails, rec, verdict, headers)
        _log(state, rec, "guardrail_blocked", status)
        return response
    if not (body.get("stream_options") or {}).get("include_usage"):
        answer.pop("usage", None)
    events = answer_as_events(answer)

    async def replay() -> AsyncIterator[bytes]:
        for event in events:
            yield event + b"\n\n"

    rec.is_stream = True
    headers["cache-control"] = "no-cache"
    return StreamingResponse(
        _relay(state, rec, UpstreamStream(replay()), t_call, wants_usage=True),
        media_type="text/event-stream",
        headers=headers,
    )


def _novelty_escalation(
    state: GatewayState, decision: Decision, body: dict[str, Any]
) -> str | None:
    """A prompt unlike anything the student learned from goes to the teacher."""
    limit = decision.route.escalation.max_prompt_distance
    if limit is None or decision.primary.served_by != "student":
        return None
    _, index = state.prompt_indexes.get(
        (decision.route.name, decision.primary.candidate), ("", None)
    )
    if index is None:
        return f"escalated: no training prompts indexed for {decision.primary.candidate}"
    distance = index.distance(prompt_text(body.get("messages", body.get("prompt", ""))))
    if distance > limit:
        return f"escalated: prompt distance {distance:.2f} > {limit:.2f}"
    return None


def _maybe_audit(
    state: GatewayState,
    decision: Decision,
    rec: RequestRecord,
    endpoint: str,
    body: dict[str, Any],
    answer: dict[str, Any] | None,
) -> None:
    if decision.audit and rec.served_by == "student" and endpoint != "embeddings":
        dispatch.spawn(state, dispatch.audit(state, decision, rec, endpoint, body, answer))


async def _stream(
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
        rec.upstream_us = int((time.perf_counter() - t_call) * 1e6)
        err = upstream_error(e)
        rec.error = e.message
        _log(state, rec, _status_of(e), err.status)
        return err.response(headers)
    headers["cache-control"] = "no-cache"

    def after(answer: dict[str, Any]) -> None:
        plain = {k: v for k, v in upstream_body.items() if k != "stream_options"}
        _maybe_audit(state, decision, rec, endpoint, plain, answer)

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
        status, http_status = _status_of(e), err.status
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
        _log(state, rec, status, http_status)
    if after is not None and status == "ok":
        after(assemble_chat(events)[0])


def _usage_tokens(rec: RequestRecord) -> int:
    if rec.response is not None:
        usage = rec.response.get("usage") or {}
        return int(usage.get("total_tokens") or 0)
    for event in reversed(rec.events or []):
        if b'"usage"' in event:
            usage = (event_json(event) or {}).get("usage") or {}
            return int(usage.get("total_tokens") or 0)
    return 0


def _log(state: GatewayState, rec: RequestRecord, status: str, http_status: int) -> None:
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


def _log_rejected(state: GatewayState, rec: RequestRecord, e: ApiError) -> None:
    rec.error = e.message
    rec.route_reason = "rejected before routing"
    rec.finish("rejected", e.status)
    state.metrics.errors.labels("rejected").inc()
    state.writer.submit(rec)
