"""What one request leaves in ClickHouse.

The hot path fills a `RequestRecord` with references it already holds (parsed body, raw
events, timings). `to_row` runs on the log writer's thread: it assembles streamed answers,
reads usage, prices tokens, and serialises bodies, so none of that costs request latency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import orjson

from contracts.openai_shapes import assemble_chat
from contracts.pricing import Price, Tokens, billed_tokens
from contracts.states import RowKind, RowStatus, ServedBy

Endpoint = Literal["chat.completions", "completions", "embeddings"]

# Request fields that are the prompt itself rather than parameters.
_PROMPT_FIELDS = ("messages", "prompt", "input")
_NOT_PARAMS = {
    "model",
    "stream",
    "metadata",
    "tags",
    "flywheel_metadata",
    "flywheel_tags",
    *_PROMPT_FIELDS,
}


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    endpoint: Endpoint
    api: str = ""  # the API the client spoke (chat.completions, responses, messages, ...)
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    app: str = ""
    team: str = ""
    key_id: str = ""
    consent: bool = False
    route: str = ""
    route_reason: str = ""
    policy_version: str = ""
    requested_model: str = ""
    served_model: str = ""
    served_by: ServedBy = "teacher"
    teacher_model: str = ""
    is_stream: bool = False
    status: RowStatus = "ok"
    http_status: int = 200
    error: str = ""
    latency_us: int = 0
    ttft_us: int = 0
    upstream_us: int = 0
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] | None = None
    events: list[bytes] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    # Fields of the client's request the translated chat request left out, declared
    # (`contracts/anthropic_fields.py`): kept in the row's params as `flywheel_not_carried`.
    not_carried: list[str] = field(default_factory=list)
    prompt_fingerprint: str = ""
    finished_at: float = 0.0
    kind: RowKind = "request"
    confidence: float = -1.0  # the student's, when it was measured
    guardrail_flagged: bool = False
    mask_entities: tuple[str, ...] = ()  # masked out of the logged messages and answer
    mask_regions: tuple[str, ...] = ()  # whose national phone formats count (default set)
    parent_id: str = ""
    candidate: str = ""
    budgets_over: list[str] = field(default_factory=list)  # soft budgets this request is past
    cost_nano: int = 0  # what it cost, set when the row is finalised

    def finish(self, status: RowStatus | None = None, http_status: int | None = None) -> None:
        if status is not None:
            self.status = status
        if http_status is not None:
            self.http_status = http_status
        self.latency_us = int((time.perf_counter() - self.t0) * 1_000_000)
        self.finished_at = self.started_at + self.latency_us / 1_000_000

    def to_row(self, prices: dict[str, Price]) -> dict[str, Any]:
        response, usage = self._answer()
        request, metadata, tags, error = self.request, self.metadata, self.tags, self.error
        if self.mask_entities:
            # Raw PII never reaches ClickHouse on a masking route, whatever the model saw and
            # whatever the status: bodies, answers, metadata, tags and error text alike.
            from gateway.guardrails.engine import mask_strings
            from gateway.guardrails.pii import PHONE_REGIONS

            ents, regions = self.mask_entities, self.mask_regions or PHONE_REGIONS
            request = mask_strings(request, ents, regions)
            response = mask_strings(response, ents, regions)
            metadata = mask_strings(metadata, ents, regions)
            tags = mask_strings(tags, ents, regions)
            error = mask_strings(error, ents, regions)
        estimated = usage is None
        if usage is None:
            # No usage from the upstream (some send none; an abandoned or cut stream never
            # gets its usage chunk): price what was generated, flagged as an estimate.
            generated = response is not None and bool(response.get("choices"))
            usage = _estimate_usage(request, response) if self.status == "ok" or generated else {}
            estimated = bool(usage)
        tokens = billed_tokens(usage)
        tokens_in, tokens_out = tokens.prompt, tokens.completion
        cost = _cost(prices, self.served_model, tokens)
        self.cost_nano = int(cost * 1_000_000_000)
        # Shadow and audit calls are extra spend; only a user's request has a baseline: the
        # teacher billed for the same tokens (a student's answer reads no provider cache).
        baseline = (
            _cost(prices, self.teacher_model, tokens) if self.kind == "request" else Decimal(0)
        )
        finish = ""
        choices = response.get("choices") if response else None
        if choices:
            finish = str(choices[0].get("finish_reason") or "")
        return {
            "request_id": self.request_id,
            "started_at": utc_timestamp(self.started_at),
            "finished_at": utc_timestamp(self.finished_at or self.started_at),
            "endpoint": self.endpoint,
            "api": self.api or self.endpoint,
            "app": self.app,
            "team": self.team,
            "key_id": self.key_id,
            "consent": self.consent,
            "route": self.route,
            "policy_version": self.policy_version,
            "route_reason": self.route_reason,
            "requested_model": self.requested_model,
            "served_model": self.served_model,
            "served_by": self.served_by,
            "teacher_model": self.teacher_model,
            "is_stream": self.is_stream,
            "status": self.status,
            "http_status": self.http_status,
            "error": error,
            "latency_us": self.latency_us,
            "ttft_us": self.ttft_us or (self.latency_us if self.status == "ok" else 0),
            "upstream_us": self.upstream_us,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "cached_input_tokens": tokens.cache_read,
            "cache_write_tokens": tokens.cache_write,
            "usage_estimated": estimated,
            "cost_usd": str(cost),
            "baseline_cost_usd": str(baseline),
            "params": _json(
                {k: v for k, v in request.items() if k not in _NOT_PARAMS}
                | ({"flywheel_not_carried": self.not_carried} if self.not_carried else {})
            ),
            "messages": _json(_prompt(request)),
            "response": _json(_response_body(self.endpoint, response)),
            "finish_reason": finish,
            "prompt_fingerprint": self.prompt_fingerprint,
            "guardrails": _json(self.guardrails),
            "metadata": metadata,
            "tags": tags,
            "kind": self.kind,
            "parent_id": self.parent_id,
            "candidate": self.candidate,
            "confidence": self.confidence,
            "guardrail_flagged": self.guardrail_flagged,
            "budgets_over": self.budgets_over,
        }

    def _answer(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        if self.events is not None:
            return assemble_chat(self.events)
        if self.response is None:
            return None, None
        usage = self.response.get("usage")
        return self.response, usage if isinstance(usage, dict) else None


def utc_timestamp(epoch: float) -> float:
    """Seconds since the epoch at millisecond precision: DateTime64(3) reads it as is, and
    it costs a tenth of formatting a string."""
    return round(epoch, 3)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode() if value is not None else ""


def _prompt(request: dict[str, Any]) -> Any:
    for name in _PROMPT_FIELDS:
        if name in request:
            return request[name]
    return None


def _response_body(endpoint: str, response: dict[str, Any] | None) -> Any:
    if response is None:
        return None
    if endpoint == "embeddings":
        # Vectors are large and useless for distillation; keep their shape only.
        data = response.get("data") or []
        dims = len(data[0].get("embedding") or []) if data else 0
        return {"embeddings": len(data), "dimensions": dims}
    return {"choices": response.get("choices", [])}


def _cost(prices: dict[str, Price], model: str, tokens: Tokens) -> Decimal:
    price = prices.get(model)
    return price.billed(tokens) if price else Decimal(0)


def _estimate_usage(request: dict[str, Any], response: dict[str, Any] | None) -> dict[str, int]:
    """~4 characters per token, for upstreams that report no usage; the row says so."""
    prompt_chars = len(orjson.dumps(_prompt(request)))
    answer_chars = len(orjson.dumps(response.get("choices", []))) if response else 0
    return {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": answer_chars // 4}
