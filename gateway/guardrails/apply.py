"""Guardrails around one request: input rails before the model, output rails after.

What each action does: `block` answers with an OpenAI-style 400 `guardrail_blocked` (or, if
the route says `block_with: refusal`, an ordinary answer carrying the refusal message with
`finish_reason: content_filter`); `mask` replaces detected values with `[EMAIL]`, `[CARD]`...
in what the model sees (unless `mask_upstream: false`), in what the user sees (output), and
always in what is logged; `flag` only records the verdict.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.responses import Response

from contracts.errors import ApiError
from gateway.context import RequestContext
from gateway.guardrails.engine import Outcome, Verdict
from gateway.request_log import RequestRecord


def _record(rec: RequestRecord, outcome: Outcome) -> None:
    rec.guardrails.extend(v.as_row() for v in outcome.verdicts)
    if any(v.hit and v.action in ("flag", "block") for v in outcome.verdicts):
        rec.guardrail_flagged = True


def _prompt_messages(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    if isinstance(body.get("messages"), list):
        return list(body["messages"])
    if isinstance(body.get("prompt"), str):
        return [{"role": "user", "content": body["prompt"]}]
    return None


async def guard_input(ctx: RequestContext) -> Verdict | None:
    """Run input rails; rewrite what the upstream sees and what is logged. Returns the
    blocking verdict, if any."""
    rails, body, upstream_body = ctx.rails, ctx.body, ctx.upstream_body
    messages = _prompt_messages(body)
    if rails is None or messages is None or not rails.spec.input:
        return None
    outcome = await rails.check_input(messages)
    _record(ctx.record, outcome)
    if "messages" in body:
        upstream_body["messages"] = outcome.for_peer
    else:
        upstream_body["prompt"] = outcome.for_peer[0]["content"]
    return outcome.blocked


async def guard_output(ctx: RequestContext, answer: dict[str, Any]) -> Verdict | None:
    """Run output rails on every choice; mask in place. Returns the blocking verdict."""
    rails, rec = ctx.rails, ctx.record
    if rails is None or not rails.spec.output:
        return None
    for choice in answer.get("choices") or []:
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if not isinstance(text, str) or not text:
            continue
        outcome = await rails.check_output(text)
        _record(rec, outcome)
        if outcome.blocked is not None:
            return outcome.blocked
        if outcome.for_peer != text:
            if isinstance(message, dict):
                message["content"] = outcome.for_peer
            else:
                choice["text"] = outcome.for_peer
    return None


def blocked(ctx: RequestContext, verdict: Verdict) -> Response:
    """Finish a blocked request's row and answer it: an error or a refusal."""
    rails, rec, headers = ctx.rails, ctx.record, ctx.headers
    assert rails is not None, "only a route with rails blocks"
    what = "Request" if verdict.direction == "input" else "Response"
    detail = f" ({verdict.detail})" if verdict.detail else ""
    rec.error = f"{what} blocked by guardrail `{verdict.rail}`{detail}"
    if rails.spec.block_with == "error":
        err = ApiError(400, f"{rec.error}.", code="guardrail_blocked", param=verdict.rail)
        ctx.finish("guardrail_blocked", 400)
        return err.response(headers)
    answer = {
        "id": rec.request_id,
        "object": "chat.completion" if rec.endpoint == "chat.completions" else "text_completion",
        "created": int(time.time()),
        "model": rec.requested_model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "content_filter",
                **(
                    {"message": {"role": "assistant", "content": rails.spec.refusal_message}}
                    if rec.endpoint == "chat.completions"
                    else {"text": rails.spec.refusal_message}
                ),
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    rec.response = answer
    ctx.finish("guardrail_blocked", 200)
    return Response(orjson.dumps(answer), media_type="application/json", headers=headers)
