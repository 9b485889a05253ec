"""Output checks on an answer before the user sees it: the request's own format
(`response_format` JSON) and the route's output rails. A student answer that fails them is
kept as an `output_rejected` row and the teacher answers instead.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway import dispatch
from gateway.guardrails.apply import guard_output
from gateway.guardrails.engine import RouteRails, Verdict
from gateway.request_log import RequestRecord
from gateway.routing import Decision
from gateway.state import GatewayState
from gateway.streaming import without_stream


def format_failure(body: dict[str, Any], answer: dict[str, Any]) -> str | None:
    """The request's own output contract: JSON when `response_format` asks for it."""
    kind = (body.get("response_format") or {}).get("type")
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
    state: GatewayState,
    decision: Decision,
    rec: RequestRecord,
    body: dict[str, Any],
    upstream_body: dict[str, Any],
    answer: dict[str, Any],
    rails: RouteRails | None,
) -> tuple[dict[str, Any], Verdict | None]:
    """Output checks (the request's format, the route's output rails). A student answer that
    fails them is kept as an `output_rejected` row and the teacher answers instead."""
    failure = format_failure(body, answer)
    verdict = await guard_output(rails, rec, answer) if rails is not None else None
    if rec.served_by != "student" or (failure is None and verdict is None):
        return answer, verdict
    what = failure or f"guardrail {verdict.rail if verdict else ''}"
    reason = f"fallback: student output failed {what}"
    rejected = dispatch.reject_student_answer(rec, decision.primary, answer, reason)
    state.writer.submit(rejected)
    plain = without_stream(upstream_body)
    raw = await dispatch.call(state, decision.escalate(reason), rec, rec.endpoint, plain)
    answer = orjson.loads(raw)
    answer["id"] = rec.request_id
    verdict = await guard_output(rails, rec, answer) if rails is not None else None
    return answer, verdict


def maybe_audit(
    state: GatewayState,
    decision: Decision,
    rec: RequestRecord,
    endpoint: str,
    body: dict[str, Any],
    answer: dict[str, Any] | None,
) -> None:
    if decision.audit and rec.served_by == "student" and endpoint != "embeddings":
        dispatch.spawn(state, dispatch.audit(state, decision, rec, endpoint, body, answer))
