"""The OpenAI-compatible endpoints: chat completions, completions, embeddings, models.

Request path: auth → body (size, JSON, types) → route → upstream → response, then one
`RequestRecord` handed to the log writer. Every authenticated request is logged, whatever
its outcome: success, rejection, upstream error, timeout, or a client gone mid-stream.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from uuid_utils import uuid7

from gateway import dispatch
from gateway.auth import Principal
from gateway.bodies import SCHEMAS, read_json, validate
from gateway.errors import ApiError
from gateway.escalation import prompt_text
from gateway.guardrails.apply import blocked, guard_input
from gateway.outcome import failed_upstream, log_rejected, log_request
from gateway.output_checks import checked, maybe_audit
from gateway.request_log import RequestRecord
from gateway.routing import Decision, RequestFacts, fingerprint_system_prompt
from gateway.state import GatewayState
from gateway.stream_relay import checked_stream, relay_stream
from gateway.upstream import UpstreamError

# Gateway-only fields never sent upstream.
_GATEWAY_FIELDS = ("metadata", "tags")


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gw
    return state


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
        log_rejected(state, rec, e)
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
            log_request(state, rec, "guardrail_blocked", status)
            return response
    if decision.shadow is not None:
        dispatch.spawn(state, dispatch.shadow(state, decision, rec, endpoint, upstream_body))
    if (
        rec.is_stream
        and endpoint == "chat.completions"
        and (
            (rails is not None and rails.buffers_output) or decision.primary.served_by == "student"
        )
    ):
        # Output checks must read the whole answer before the user does (output rails that
        # block or mask; a student answer the teacher may have to replace): answer in full,
        # check, then replay it as a stream.
        return await checked_stream(
            state, rec, decision, endpoint, body, upstream_body, headers, rails
        )
    if rec.is_stream:
        return await relay_stream(state, rec, decision, endpoint, body, upstream_body, headers)

    t_call = time.perf_counter()
    try:
        raw = await dispatch.call(state, decision, rec, endpoint, upstream_body)
    except UpstreamError as e:
        return failed_upstream(state, rec, e, headers, t_call)
    rec.upstream_us = int((time.perf_counter() - t_call) * 1e6)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        err = ApiError(502, "Upstream returned a body that is not JSON.", code="upstream_error")
        rec.error = err.message
        log_request(state, rec, "upstream_error", 502)
        return err.response(headers)
    if isinstance(data, dict) and endpoint != "embeddings":
        data["id"] = rec.request_id
    rec.response = data if isinstance(data, dict) else None
    if rec.response is not None and endpoint == "chat.completions":
        try:
            data, verdict = await checked(state, decision, rec, body, upstream_body, data, rails)
        except UpstreamError as e:
            return failed_upstream(state, rec, e, headers)
        rec.response = data
        if verdict is not None and rails is not None:
            response, status = blocked(rails, rec, verdict, headers)
            log_request(state, rec, "guardrail_blocked", status)
            return response
    out = orjson.dumps(data)
    log_request(state, rec, "ok", 200)
    maybe_audit(state, decision, rec, endpoint, upstream_body, rec.response)
    return Response(out, media_type="application/json", headers=headers)


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
