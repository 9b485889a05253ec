"""The OpenAI-compatible endpoints: chat completions, completions, embeddings, models.

Request path, each step taking the request's `RequestContext`: auth → body (size, JSON,
types) → route (one router snapshot) → rate limit → input rails → upstream (dispatch) →
output checks → response. Every authenticated request leaves exactly one row, whatever its
outcome: `handle` wraps the whole path, so a rejection, an upstream failure, a client that
hangs up, or an exception nobody planned for all finish the context once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from uuid_utils import uuid7

from contracts.errors import ApiError
from contracts.openai_shapes import fingerprint_system_prompt, prompt_text
from contracts.responses_shapes import request_id_of
from gateway import dispatch
from gateway.auth import require_role
from gateway.bodies import SCHEMAS, read_json, validate
from gateway.budgets import reservation_nano
from gateway.caching import cache_lookup, cache_store, maybe_audit_hit
from gateway.context import RequestContext
from gateway.guardrails.apply import blocked, guard_input
from gateway.outcome import fail, failed_upstream, internal_error, reject, unrecordable
from gateway.output_checks import checked, maybe_audit
from gateway.routing import Decision, RequestFacts
from gateway.session_routing import Pin, session_of
from gateway.state import GatewayState
from gateway.stream_relay import checked_stream, relay_stream
from gateway.surfaces import Messages, Native, Responses, Surface
from gateway.upstream import UpstreamError

log = logging.getLogger("flywheel.gateway")

# Gateway-only fields, never sent upstream. `flywheel_metadata`/`flywheel_tags` are the
# names of record; `tags` (not an OpenAI field) is still accepted for a release. OpenAI's own
# `metadata` is forwarded (stored completions keep it), and recorded and routed on as well.
_GATEWAY_FIELDS = ("tags", "flywheel_metadata", "flywheel_tags")


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gw
    return state


async def chat_completions(request: Request) -> Response:
    return await handle(request, Native("chat.completions", "chat.completions"))


async def completions(request: Request) -> Response:
    return await handle(request, Native("completions", "completions"))


async def embeddings(request: Request) -> Response:
    return await handle(request, Native("embeddings", "embeddings"))


async def responses(request: Request) -> Response:
    state = _state(request)
    return await handle(request, Responses(state.store, state.conversations))


async def messages(request: Request) -> Response:
    state = _state(request)
    return await handle(request, Messages(state.store, state.conversations))


# The app's API headers an upstream that speaks the same API gets as they were sent.
_PASSED_THROUGH = ("anthropic-version", "anthropic-beta")


def _header_text(text: str) -> str:
    """A reason as one printable ASCII header line (model and rule names may be anything)."""
    line = " ".join(text.split())
    return line.encode("ascii", "replace").decode()[:300]


async def handle(request: Request, surface: Surface) -> Response:
    """The one exit: whatever happens below, the request's row is written once; the
    surface turns the finished response into the client's API shape."""
    state = _state(request)
    try:
        principal = state.keys.authenticate(request.headers)  # 401: no app to log against
        require_role(principal, *state.config.server.model_api_roles)  # 403: dashboard keys
    except ApiError as e:
        # Not logged (no app to log against), but named, so a support ticket can cite it.
        request_id = str(uuid7())
        return surface.respond(e.response({"x-request-id": request_id}), request_id)
    ctx = RequestContext.begin(state, principal, surface.endpoint)
    ctx.record.api = surface.api
    ctx.client_api_headers = {
        name: request.headers[name] for name in _PASSED_THROUGH if name in request.headers
    }
    ctx.surface = surface
    response = await _guarded(ctx, request, surface)
    if ctx.decision is not None:
        # Who answered: teacher, student, backup (a fallback) or cache, and which model;
        # `escalated` is the teacher (or a backup) answering because the student was unsure
        # (or failed, or the prompt was novel): the reason header says which.
        served_by: str = ctx.record.served_by
        if ctx.decision.escalated and served_by in ("teacher", "fallback"):
            served_by = "escalated"
        response.headers["x-flywheel-served-by"] = served_by
        response.headers["x-flywheel-reason"] = _header_text(ctx.record.route_reason)
        response.headers["x-flywheel-model"] = ctx.record.served_model
        response.headers["x-flywheel-route"] = ctx.record.route
        if ctx.record.not_carried:  # left out of a translated request, and said so
            response.headers["x-flywheel-not-carried"] = ", ".join(ctx.record.not_carried)
        if ctx.decision.route.rate_limit is None:
            # No limit of the gateway's own here: the upstream's tells the app its state.
            for name, value in ctx.upstream_headers.items():
                response.headers.setdefault(name, value)
    return surface.respond(response, ctx.record.request_id)


async def _guarded(ctx: RequestContext, request: Request, surface: Surface) -> Response:
    state = ctx.state
    try:
        if state.writer.refusing:
            raise unrecordable(state)
        response = await _proxy(ctx, request, surface)
        if ctx.unrecorded and not ctx.streaming:
            return unrecordable(state).response(ctx.headers)
        return response
    except ApiError as e:
        if ctx.finished:
            return e.response(ctx.headers)
        return reject(ctx, e)
    except Exception:
        log.exception("unhandled error on %s (request %s)", surface.api, ctx.record.request_id)
        return internal_error(ctx)
    finally:
        if not ctx.finished and not ctx.streaming:
            # Cancelled before an answer: the client hung up while the model was working.
            ctx.record.error = "client disconnected before the answer"
            ctx.finish("client_disconnect", 499)


async def _proxy(ctx: RequestContext, request: Request, surface: Surface) -> Response:
    state, rec = ctx.state, ctx.record
    server = state.config.server
    body = await read_json(request, server.max_body_bytes, server.body_timeout_s)
    rec.request = raw = body  # as sent, until the surface says what it asks in chat terms
    body = await surface.to_chat(body, ctx.principal)
    ctx.body = rec.request = body
    rec.requested_model = str(body.get("model", ""))
    validate(SCHEMAS[ctx.endpoint], body)
    rec.metadata = {**(body.get("metadata") or {}), **(body.get("flywheel_metadata") or {})}
    rec.tags = [*(body.get("flywheel_tags") or []), *(body.get("tags") or [])]
    rec.prompt_fingerprint = fingerprint_system_prompt(body.get("messages"))
    facts = RequestFacts(
        app=ctx.principal.app,
        team=ctx.principal.team,
        model=body["model"],
        headers=request.headers,
        metadata=rec.metadata,
        tags=tuple(rec.tags),
        system_fingerprint=rec.prompt_fingerprint,
    )
    decision = _decide_in_session(ctx, request, facts, raw, body)
    ctx.decide(decision)
    if ctx.endpoint != "embeddings":
        ctx.rails = ctx.router.rails.get(decision.route.name)
    if ctx.rails is not None:
        rec.mask_entities = ctx.rails.log_mask  # from here on, whatever the outcome
        rec.mask_regions = ctx.rails.phone_regions
    ctx.headers.update(
        await state.limiter.admit(
            ctx.principal.key_id, decision.route.name, decision.route.rate_limit
        )
    )
    await _reserve_budget(ctx, body)
    novelty = _novelty_escalation(ctx)
    if novelty is not None:
        ctx.decide(decision.escalate(novelty))
    rec.is_stream = bool(body.get("stream"))
    ctx.upstream_body = {k: v for k, v in body.items() if k not in _GATEWAY_FIELDS}
    if ctx.rails is not None:
        verdict = await guard_input(ctx)
        if verdict is not None:
            return blocked(ctx, verdict)
    cached = await cache_lookup(ctx, request.headers.get("x-flywheel-cache", ""))
    if cached is not None:
        return await _answer_from_cache(ctx, cached)
    if ctx.chosen.shadow is not None:
        dispatch.spawn(state, dispatch.shadow(ctx))
    if rec.is_stream and ctx.endpoint == "chat.completions" and _checks_before_sending(ctx):
        return await checked_stream(ctx)
    if rec.is_stream:
        return await relay_stream(ctx)
    return await _answer_whole(ctx)


def _decide_in_session(
    ctx: RequestContext,
    request: Request,
    facts: RequestFacts,
    raw: dict[str, Any],
    chat: dict[str, Any],
) -> Decision:
    """The router's decision; a later turn of an agent session goes where its first went
    (`gateway/session_routing.py`)."""
    pins = ctx.state.session_pins
    if not pins.capacity or ctx.endpoint != "chat.completions":
        return ctx.router.decide(facts)
    previous = raw.get("previous_response_id")
    earlier = request_id_of(str(previous)) if isinstance(previous, str) else None
    key = session_of(
        request.headers,
        raw,
        chat,
        pins.session_of_response(earlier) if earlier else "",
        facts.system_fingerprint,
    )
    if key is None:
        return ctx.router.decide(facts)
    pin = pins.get(key.key) if key.explicit else None
    decision = ctx.router.decide(facts, pin, key.source)
    # The first turn's choice, kept (or the teacher, once a pinned student no longer serves).
    primary = decision.primary
    answer_id = ctx.record.request_id if ctx.record.api == "responses" else ""
    pins.pin(key.key, Pin(primary.served_by, primary.candidate), answer_id)
    return decision


async def _reserve_budget(ctx: RequestContext, body: dict[str, Any]) -> None:
    """Hold the request's estimated cost on its budgets (a hard one may refuse it)."""
    book, p, route = ctx.state.budgets, ctx.principal, ctx.chosen.route.name
    covering = book.covering(p.key_id, p.app, p.team, route)
    if not covering:
        return
    hard = any(b.kind == "hard" for b in covering)
    estimate = reservation_nano(ctx.chosen, ctx.router.prices, body, hard)
    ctx.reservation = await book.reserve(covering, estimate)
    if ctx.reservation is not None and ctx.reservation.over:
        ctx.record.budgets_over = ctx.reservation.over
        for name in ctx.reservation.over:
            ctx.state.metrics.budget_exceeded.labels(name, "soft").inc()


def _checks_before_sending(ctx: RequestContext) -> bool:
    """Output checks must read the whole answer before the user does: output rails that
    block or mask, or a student answer the teacher may have to replace."""
    return (ctx.rails is not None and ctx.rails.buffers_output) or (
        ctx.chosen.primary.served_by == "student"
    )


async def _answer_whole(ctx: RequestContext) -> Response:
    rec = ctx.record
    t_call = time.perf_counter()
    try:
        raw = await dispatch.call(ctx, ctx.upstream_body)
    except UpstreamError as e:
        return failed_upstream(ctx, e, t_call)
    rec.upstream_us = int((time.perf_counter() - t_call) * 1e6)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        err = ApiError(502, "Upstream returned a body that is not JSON.", code="upstream_error")
        return fail(ctx, err, "upstream_error")
    if isinstance(data, dict) and ctx.endpoint != "embeddings":
        data["id"] = rec.request_id
    rec.response = data if isinstance(data, dict) else None
    if rec.response is not None and ctx.endpoint == "chat.completions":
        try:
            data, verdict = await checked(ctx, data)
        except UpstreamError as e:
            return failed_upstream(ctx, e)
        rec.response = data
        if verdict is not None:
            return blocked(ctx, verdict)
    out = orjson.dumps(data)
    ctx.finish("ok", 200)
    cache_store(ctx, rec.response)
    maybe_audit(ctx, ctx.upstream_body, rec.response)
    return Response(out, media_type="application/json", headers=ctx.headers)


async def _answer_from_cache(ctx: RequestContext, answer: dict[str, Any]) -> Response:
    """A cache hit: no upstream call; output checks still run on the answer."""
    rec = ctx.record
    maybe_audit_hit(ctx, answer)
    if rec.is_stream and ctx.endpoint == "chat.completions":
        return await checked_stream(ctx, answer)
    if ctx.endpoint != "embeddings":
        answer["id"] = rec.request_id
    rec.response = answer
    if ctx.endpoint == "chat.completions":
        answer, verdict = await checked(ctx, answer)
        rec.response = answer
        if verdict is not None:
            return blocked(ctx, verdict)
    ctx.finish("ok", 200)
    return Response(orjson.dumps(answer), media_type="application/json", headers=ctx.headers)


def _novelty_escalation(ctx: RequestContext) -> str | None:
    """A prompt unlike anything the student learned from goes to the teacher."""
    decision = ctx.chosen
    limit = decision.route.escalation.max_prompt_distance
    if limit is None or decision.primary.served_by != "student":
        return None
    _, index = ctx.state.prompt_indexes.get(
        (decision.route.name, decision.primary.candidate), ("", None)
    )
    if index is None:
        return f"escalated: no training prompts indexed for {decision.primary.candidate}"
    body: dict[str, Any] = ctx.body
    distance = index.distance(prompt_text(body.get("messages", body.get("prompt", ""))))
    if distance > limit:
        return f"escalated: prompt distance {distance:.2f} > {limit:.2f}"
    return None
