"""Carry out a routing decision: call the chosen model, retry, fall back, and fire the
background shadow and audit calls.

Invariant: a student that errors or times out never fails the user's request while a
fallback remains (the teacher, then the route's backups); a client mistake (400/413/422) is
not retried elsewhere. Shadow and audit calls never delay or alter the user's answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import orjson
from uuid_utils import uuid7

from contracts.agreement import agreement, judge_messages, parse_judgement
from contracts.openai_shapes import answer_text, without_stream
from contracts.states import RowKind
from gateway.context import RequestContext
from gateway.escalation import confidence_of, confidence_reason
from gateway.few_shot import few_shot_candidate, with_examples
from gateway.request_log import RequestRecord, utc_timestamp
from gateway.routing import Target
from gateway.state import GatewayState
from gateway.streaming import as_chat_stream, replay
from gateway.surfaces import Translated
from gateway.upstream import UpstreamError, UpstreamStream

log = logging.getLogger("flywheel.dispatch")

T = TypeVar("T")
_CLIENT_ERRORS = (400, 413, 422)


def _short(e: UpstreamError) -> str:
    return "timeout" if e.kind == "timeout" else f"error {e.status or e.kind}"


def _upstream_body(body: dict[str, Any], target: Target) -> dict[str, Any]:
    out = dict(body)
    out["model"] = target.model.upstream_name
    return out


def _clamped(body: dict[str, Any], ctx: RequestContext, target: Target) -> dict[str, Any]:
    """An answer budget over the target model's longest answer is cut to it (a coding agent
    asks 64,000 of whichever model serves it; an upstream would refuse the request)."""
    price = ctx.router.prices.get(target.model_name)
    longest = price.max_output_tokens if price is not None else None
    if not longest:
        return body
    for name in ("max_tokens", "max_completion_tokens"):
        asked = body.get(name)
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > longest:
            body[name] = longest
    return body


async def _body_for(ctx: RequestContext, body: dict[str, Any], target: Target) -> dict[str, Any]:
    """What `target` is sent: the body under its upstream name (its answer budget within
    the model's limit), with a few-shot candidate's examples put in."""
    out = _clamped(_upstream_body(body, target), ctx, target)
    route = ctx.chosen.route
    if target.candidate and few_shot_candidate(route, target.candidate) is not None:
        run = ctx.router.states.runs.get((route.name, target.candidate), "")
        out = await with_examples(ctx.state.few_shot, route, target.candidate, run, out)
    return out


async def _attempts(ctx: RequestContext, call: Callable[[Target], Awaitable[T]]) -> T:
    """Try the primary target, then each fallback; record who finally served and why."""
    decision, rec = ctx.chosen, ctx.record
    errors: list[str] = []
    first_error: UpstreamError | None = None
    for target in (decision.primary, *decision.fallbacks):
        for _ in range(decision.route.retries.attempts):
            try:
                result = await call(target)
            except UpstreamError as e:
                if e.status in _CLIENT_ERRORS:
                    raise
                _student_failed(ctx, target, e)
                first_error = first_error or e
                errors.append(f"{target.model_name}: {_short(e)}")
                continue
            if target.served_by == "student":
                ctx.state.students.answered(decision.route.name, target.candidate)
            rec.served_model = target.model_name
            rec.served_by = target.served_by
            rec.candidate = target.candidate
            if first_error is None:
                rec.route_reason = target.reason
            elif decision.primary.served_by == "student" and target.served_by == "teacher":
                rec.route_reason = f"fallback: student {_short(first_error)}"
            else:
                rec.route_reason = f"{target.reason} ({'; '.join(errors)})"
            return result
    assert first_error is not None
    rec.route_reason = f"all targets failed ({'; '.join(errors)})"
    raise first_error


def _student_failed(ctx: RequestContext, target: Target, e: UpstreamError) -> None:
    if target.served_by == "student":
        error = f"{_short(e)}: {e}"[:300]
        ctx.state.students.failed(ctx.chosen.route.name, target.candidate, e.status, error)


class Escalated(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _min_confidence(ctx: RequestContext) -> float | None:
    """The escalation threshold for this request's student, if its answer is checked."""
    if ctx.endpoint != "chat.completions":
        return None
    return ctx.chosen.min_confidence(ctx.router.states)


def _drop_logprobs(answer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    if not body.get("logprobs"):
        for ch in answer.get("choices") or []:
            ch.pop("logprobs", None)
    return answer


async def call(ctx: RequestContext, body: dict[str, Any]) -> bytes:
    """The whole answer from the decided target (or its fallbacks)."""
    answer = await _student_first(ctx, body)
    if answer is not None:
        return orjson.dumps(answer)
    upstreams = ctx.state.upstreams

    async def one(target: Target) -> bytes:
        native = _native(ctx, target)
        if native is not None:
            surface, native_body = native
            raw = await upstreams.call(
                target.model,
                surface.native_endpoint,
                native_body,
                timeout_s=target.timeout_s,
                client_headers=ctx.client_api_headers,
            )
            return surface.took_native(raw)
        return await upstreams.call(
            target.model,
            ctx.endpoint,
            await _body_for(ctx, body, target),
            timeout_s=target.timeout_s,
            relay=ctx.upstream_headers,
        )

    return await _attempts(ctx, one)


def _native(ctx: RequestContext, target: Target) -> tuple[Translated, dict[str, Any]] | None:
    """The surface and the body for `target`'s own endpoint of the client's API (Responses,
    Anthropic Messages), when the request passes through natively. Only where nothing must
    read or change the answer first: no output rails, and not a student (its answer is
    checked; students speak chat)."""
    surface = ctx.surface if isinstance(ctx.surface, Translated) else None
    if surface is None:
        return None
    checked = target.served_by == "student" or (ctx.rails is not None and ctx.rails.spec.output)
    body = surface.native_body(target.model, may_pass_through=not checked)
    if body is None:
        ctx.record.not_carried = surface.not_carried  # translated: what it leaves out
        return None
    ctx.record.not_carried = []
    return surface, body


async def stream(ctx: RequestContext, body: dict[str, Any]) -> UpstreamStream:
    """Fallbacks apply until the first byte; after that the stream is committed. A student
    whose confidence is checked answers whole first (students are local and fast), and its
    answer is then replayed as a stream."""
    answer = await _student_first(ctx, body)
    if answer is not None:
        return replay(answer)
    upstreams = ctx.state.upstreams

    async def one(target: Target) -> UpstreamStream:
        native = _native(ctx, target)
        if native is not None:
            surface, native_body = native
            upstream = await upstreams.stream(
                target.model,
                surface.native_endpoint,
                native_body,
                timeout_s=target.timeout_s,
                client_headers=ctx.client_api_headers,
            )
            surface.native_events = []
            return as_chat_stream(upstream, surface.native_events, surface.native_reader())
        return await upstreams.stream(
            target.model,
            ctx.endpoint,
            await _body_for(ctx, body, target),
            timeout_s=target.timeout_s,
            relay=ctx.upstream_headers,
        )

    return await _attempts(ctx, one)


async def _student_first(ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any] | None:
    """On a route that escalates on confidence, the student answers whole first: its answer
    if it stands; else the context's decision is escalated past the student."""
    threshold = _min_confidence(ctx)
    if threshold is None:
        return None
    surface = ctx.surface
    if isinstance(surface, Translated) and (why := surface.provider_only()):
        ctx.decide(ctx.chosen.escalate(f"only the provider can serve it: {why}"))
        return None
    try:
        answer = await _confident_student(ctx, without_stream(body), threshold)
    except Escalated as e:
        ctx.decide(ctx.chosen.escalate(e.reason))
        return None
    return _drop_logprobs(answer, body)


async def _confident_student(
    ctx: RequestContext, body: dict[str, Any], threshold: float
) -> dict[str, Any]:
    """The student's answer if it is sure enough; raises Escalated otherwise (a student that
    fails escalates too: that is its fallback)."""
    rec = ctx.record
    target = ctx.chosen.primary
    try:
        raw = await ctx.state.upstreams.call(
            target.model,
            ctx.endpoint,
            {**(await _body_for(ctx, body, target)), "logprobs": True},
            timeout_s=target.timeout_s,
        )
        answer = orjson.loads(raw)
    except UpstreamError as e:
        _student_failed(ctx, target, e)
        raise Escalated(f"fallback: student {_short(e)}") from e
    except orjson.JSONDecodeError as e:
        raise Escalated("fallback: student answered with invalid JSON") from e
    ctx.state.students.answered(ctx.chosen.route.name, target.candidate)
    confidence = confidence_of(answer)
    rec.confidence = -1.0 if confidence is None else confidence
    reason = confidence_reason(confidence, threshold)
    if reason is not None and isinstance(answer, dict) and answer.get("out_of_scope") is True:
        # The student's own scope gate: the prompt is unlike anything it learned.
        reason = "escalated: out of the student's scope"
    if reason is not None:
        # Keep what the student said: the review queue shows its least sure answers.
        child = _child(rec, "escalated", target, reason)
        child.response = answer
        child.finish("ok", 200)
        ctx.state.writer.submit(child)
        raise Escalated(reason)
    rec.served_model, rec.served_by = target.model_name, target.served_by
    rec.candidate, rec.route_reason = target.candidate, target.reason
    return dict(answer)


# --- background work -------------------------------------------------------------------------


def spawn(state: GatewayState, coro: Awaitable[None]) -> None:
    """Run in the background, keeping a reference so the task is not collected mid-flight."""
    state.spawn(coro)  # type: ignore[arg-type]


def _child(parent: RequestRecord, kind: RowKind, target: Target, reason: str) -> RequestRecord:
    return replace(
        parent,
        request_id=str(uuid7()),
        kind=kind,
        parent_id=parent.request_id,
        started_at=time.time(),
        t0=time.perf_counter(),
        served_model=target.model_name,
        served_by=target.served_by,
        candidate=target.candidate,
        route_reason=reason,
        is_stream=False,
        response=None,
        events=None,
        error="",
        ttft_us=0,
        upstream_us=0,
        status="ok",
        http_status=200,
    )


def reject_student_answer(
    parent: RequestRecord, student: Target, answer: dict[str, Any], reason: str
) -> RequestRecord:
    """The student's answer that failed the output checks, kept for review and audits."""
    child = _child(parent, "output_rejected", student, reason)
    child.response = answer
    child.finish("ok", 200)
    return child


async def _background_call(
    ctx: RequestContext,
    rec: RequestRecord,
    target: Target,
    body: dict[str, Any],
    min_confidence: float | None = None,
) -> dict[str, Any] | None:
    """`min_confidence`: measure the answer's confidence (the body asks for logprobs) and
    name the escalation it would have caused in the row's reason."""
    body = without_stream(body)
    try:
        raw = await ctx.state.upstreams.call(
            target.model,
            ctx.endpoint,
            await _body_for(ctx, body, target),
            timeout_s=target.timeout_s,
        )
        rec.response = orjson.loads(raw)
        if min_confidence is not None and isinstance(rec.response, dict):
            confidence = confidence_of(rec.response)
            rec.confidence = -1.0 if confidence is None else confidence
            unsure = confidence_reason(confidence, min_confidence)
            if unsure is not None:
                rec.route_reason = f"{rec.route_reason}; would be {unsure}"
        rec.finish("ok", 200)
    except (UpstreamError, orjson.JSONDecodeError) as e:
        rec.error = getattr(e, "message", str(e))
        rec.finish("timeout" if getattr(e, "kind", "") == "timeout" else "upstream_error", 502)
    ctx.state.writer.submit(rec)
    return rec.response


async def shadow(ctx: RequestContext) -> None:
    """The shadow candidate answers a copy; its row is all that comes of it. A selective
    candidate's copy carries its confidence, and says when it would have escalated: its
    shadow stage judges only the answers it would keep."""
    target = ctx.chosen.shadow
    assert target is not None
    rec = _child(ctx.record, "shadow", target, target.reason)
    route = ctx.chosen.route
    fitted = ctx.router.states.thresholds.get((route.name, target.candidate))
    threshold = route.escalation_threshold(fitted)
    if threshold is None or ctx.endpoint != "chat.completions":
        await _background_call(ctx, rec, target, ctx.upstream_body)
        return
    await _background_call(ctx, rec, target, {**ctx.upstream_body, "logprobs": True}, threshold)


async def audit(
    ctx: RequestContext,
    body: dict[str, Any],
    student_answer: dict[str, Any] | None,
    teacher: Target | None = None,
) -> None:
    """Re-ask the teacher what the student (or the semantic cache, given `teacher`)
    answered and record whether they agree."""
    decision, parent = ctx.chosen, ctx.record
    teacher = teacher or decision.fallbacks[0]
    rec = _child(parent, "audit", teacher, f"audit of {parent.candidate}")
    teacher_answer = await _background_call(ctx, rec, teacher, body)
    if teacher_answer is None or student_answer is None:
        return
    gate = decision.route.gate
    student_text, teacher_text = answer_text(student_answer), answer_text(teacher_answer)
    row = {
        "request_id": parent.request_id,
        "audit_request_id": rec.request_id,
        "at": utc_timestamp(time.time()),
        "route": decision.route.name,
        "candidate": parent.candidate,
        "metric": gate.metric,
    }
    if gate.metric == "llm_judge":
        prompt = orjson.dumps(body.get("messages") or body.get("prompt")).decode()
        try:
            verdict = await ctx.state.upstreams.call(
                teacher.model,
                "chat.completions",
                {
                    "model": teacher.model.upstream_name,
                    "temperature": 0,
                    "max_tokens": 3,
                    "messages": judge_messages(prompt, student_text, teacher_text),
                },
            )
            score = parse_judgement(answer_text(orjson.loads(verdict)))
        except (UpstreamError, orjson.JSONDecodeError) as e:
            # No verdict is not a disagreement: the audit is kept as failed, with why.
            error = f"judge {_short(e)}: {e}" if isinstance(e, UpstreamError) else str(e)
            ctx.state.writer.submit_row("audit_failures", {**row, "error": error[:500]})
            return
    else:
        score = agreement(gate.metric, student_text, teacher_text, gate.fields)
    ctx.state.writer.submit_row(
        "audits",
        {**row, "agreement": score, "student_answer": student_text, "teacher_answer": teacher_text},
    )
