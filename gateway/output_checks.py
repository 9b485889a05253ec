"""Output checks on an answer before the user sees it: the request's own format
(`response_format` JSON) and the route's output rails. A student answer that fails them is
kept as an `output_rejected` row and the teacher answers instead.
"""

from __future__ import annotations

from typing import Any

import orjson

from contracts.openai_shapes import without_stream
from gateway import dispatch
from gateway.context import RequestContext
from gateway.guardrails.apply import guard_output
from gateway.guardrails.engine import Verdict


def format_failure(body: dict[str, Any], answer: dict[str, Any]) -> str | None:
    """The request's own output contract: JSON when `response_format` asks for it."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("json_object", "json_schema"):
        return None
    for choice in answer.get("choices") or []:
        content = (choice.get("message") or {}).get("content")
        if content is None:
            continue
        try:
            orjson.loads(content)
        except orjson.JSONDecodeError:
            return "response_format: not JSON"
    return None


async def checked(
    ctx: RequestContext, answer: dict[str, Any]
) -> tuple[dict[str, Any], Verdict | None]:
    """Output checks (the request's format, the route's output rails). A student answer that
    fails them is kept as an `output_rejected` row and the teacher answers instead."""
    rec = ctx.record
    failure = format_failure(ctx.body, answer)
    verdict = await guard_output(ctx, answer)
    if rec.served_by != "student" or (failure is None and verdict is None):
        return answer, verdict
    what = failure or f"guardrail {verdict.rail if verdict else ''}"
    reason = f"fallback: student output failed {what}"
    student = ctx.chosen.primary
    ctx.state.writer.submit(dispatch.reject_student_answer(rec, student, answer, reason))
    ctx.decide(ctx.chosen.escalate(reason))
    raw = await dispatch.call(ctx, without_stream(ctx.upstream_body))
    answer = orjson.loads(raw)
    answer["id"] = rec.request_id
    verdict = await guard_output(ctx, answer)
    return answer, verdict


def maybe_audit(ctx: RequestContext, body: dict[str, Any], answer: dict[str, Any] | None) -> None:
    """Sampled student answers are re-asked to the teacher in the background."""
    if ctx.chosen.audit and ctx.record.served_by == "student" and ctx.endpoint != "embeddings":
        dispatch.spawn(ctx.state, dispatch.audit(ctx, without_stream(body), answer))
