"""The rails of one route, compiled once, run on every request of that route.

- `pii` runs the local detectors directly (microseconds); the same functions are registered
  as nemoguardrails actions for the Colang engine (`gateway/guardrails/nemo.py`).
- `jailbreak` and `deny_topics` run as nemoguardrails regex rails on its IORails engine,
  built at start, never per request.
- `prompt_attack` scores the user's text with the learned detector (`prompt_attack.py`)
  against the threshold chosen on the route's traffic (~0.1-0.5 ms, inline).
- `self_check` asks the route's teacher through nemoguardrails' LLMRails; its Colang
  interpreter costs ~14 ms a check, so it runs on a worker thread, off the event loop.

Invariant: with a `mask` rail, the text returned for logging has no detected value left in
it, whatever the route lets the model see; PII split across messages is found on their
concatenation and masked in each part.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from contracts.model_config import ModelConfig
from contracts.policy import PolicySet
from contracts.rails import Guardrails, Rail
from gateway.guardrails.detectors import (
    JAILBREAK_PATTERNS,
    JAILBREAK_RULES,
    first_rule,
    topic_patterns,
)
from gateway.guardrails.nemo import NemoRails
from gateway.guardrails.pii import PHONE_REGIONS, Span, find_pii, mask
from gateway.guardrails.prompt_attack import Loaded, PromptAttackCheck


@dataclass(slots=True)
class Verdict:
    rail: str
    direction: str
    action: str
    hit: bool
    detail: str = ""
    latency_us: int = 0
    rule: str = ""  # which detector or named pattern fired (or would have)
    score: float | None = None  # the learned detector's P(attack); 1.0 for a pattern hit

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Outcome:
    """What passed the rails: text for the other side, text for the logs, the verdicts."""

    for_peer: Any
    for_log: Any
    verdicts: list[Verdict] = field(default_factory=list)
    blocked: Verdict | None = None


# A segment is one piece of text inside the messages: (message index, part index or -1).
_Seg = tuple[int, int]


def _segments(messages: list[dict[str, Any]]) -> list[tuple[_Seg, str]]:
    out: list[tuple[_Seg, str]] = []
    for i, msg in enumerate(messages):
        content = msg.get("content")
        if isinstance(content, str):
            out.append(((i, -1), content))
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    out.append(((i, j), part["text"]))
    return out


def _with_texts(messages: list[dict[str, Any]], texts: dict[_Seg, str]) -> list[dict[str, Any]]:
    out = []
    for i, msg in enumerate(messages):
        if (i, -1) in texts:
            out.append({**msg, "content": texts[(i, -1)]})
            continue
        content = msg.get("content")
        if isinstance(content, list) and any((i, j) in texts for j in range(len(content))):
            parts = [
                {**p, "text": texts[(i, j)]} if (i, j) in texts else p
                for j, p in enumerate(content)
            ]
            out.append({**msg, "content": parts})
        else:
            out.append(msg)
    return out


def _mask_segments(
    segs: list[tuple[_Seg, str]], entities: list[str], regions: tuple[str, ...] = PHONE_REGIONS
) -> tuple[dict[_Seg, str], list[str]]:
    """Detect on the segments joined by spaces (so a number split over two messages is one
    number), then mask each segment's share of every span."""
    joined, offsets, pos = [], [], 0
    for _, text in segs:
        offsets.append(pos)
        joined.append(text)
        pos += len(text) + 1
    spans = find_pii(" ".join(joined), entities, regions)
    if not spans:
        return {}, []
    local: dict[int, list[Span]] = {}
    for span in spans:
        for k, (_, text) in enumerate(segs):
            start, end = offsets[k], offsets[k] + len(text)
            if span.start < end and span.end > start:
                local.setdefault(k, []).append(
                    Span(max(span.start, start) - start, min(span.end, end) - start, span.entity)
                )
    masked = {segs[k][0]: mask(segs[k][1], sp) for k, sp in local.items()}
    return masked, sorted({s.entity for s in spans})


class RouteRails:
    def __init__(
        self,
        route_name: str,
        spec: Guardrails,
        nemo: NemoRails,
        teacher: ModelConfig,
        detectors: Loaded | None = None,
    ) -> None:
        self.spec = spec
        self.route = route_name
        self.nemo = nemo
        self.attack_checks = {
            i: PromptAttackCheck(route_name, rail.detector, detectors or {})
            for i, rail in enumerate(spec.input)
            if rail.rail == "prompt_attack"
        }
        # Entities masked out of everything logged for this route (messages and answers).
        self.log_mask: tuple[str, ...] = tuple(
            sorted(
                {
                    e
                    for r in (*spec.input, *spec.output)
                    if r.rail == "pii" and r.action == "mask"
                    for e in r.entities
                }
            )
        )
        # National phone formats of these regions count, in every pii rail and in the logs.
        self.phone_regions: tuple[str, ...] = tuple(
            sorted(
                {
                    region
                    for r in (*spec.input, *spec.output)
                    if r.rail == "pii"
                    for region in (r.phone_regions or PHONE_REGIONS)
                }
            )
            or PHONE_REGIONS
        )
        for direction, rails in (("input", spec.input), ("output", spec.output)):
            for i, rail in enumerate(rails):
                patterns = self._patterns(rail)
                if patterns:
                    nemo.add_regex_rail(self._key(direction, i), direction, patterns)
                if rail.rail == "self_check":
                    nemo.add_self_check(self._key(direction, i), direction, teacher)

    def _key(self, direction: str, index: int) -> str:
        return f"{self.route}/{direction}/{index}"

    @staticmethod
    def _patterns(rail: Rail) -> list[str]:
        if rail.rail == "jailbreak":
            return JAILBREAK_PATTERNS
        if rail.rail == "deny_topics":
            return [p for words in rail.topics.values() for p in topic_patterns(words)]
        return []

    @property
    def active(self) -> bool:
        return bool(self.spec.input or self.spec.output)

    @property
    def buffers_output(self) -> bool:
        """Output rails that block or mask must see the whole answer before the user does."""
        return any(r.action != "flag" for r in self.spec.output)

    async def _regex_or_llm(self, key: str, rail: Rail, direction: str, text: str) -> Verdict:
        t0 = time.perf_counter()
        rule = ""
        if rail.rail == "self_check":
            hit, detail = await self.nemo.self_check(key, direction, text)
        else:
            hit, detail = await self.nemo.check_regex(key, direction, text)
            if hit and rail.rail == "deny_topics":
                detail = self._topic_of(rail, text) or detail
                rule = detail.removeprefix("topic: ")
            elif hit:
                rule = first_rule(JAILBREAK_RULES, text)
        took = int((time.perf_counter() - t0) * 1e6)
        score = (1.0 if hit else 0.0) if rail.rail == "jailbreak" else None
        return Verdict(rail.rail, direction, rail.action, hit, detail, took, rule, score)

    @staticmethod
    def _topic_of(rail: Rail, text: str) -> str:
        import re

        for topic, words in rail.topics.items():
            if any(re.search(p, text, re.I) for p in topic_patterns(words)):
                return f"topic: {topic}"
        return ""

    async def check_input(self, messages: list[dict[str, Any]]) -> Outcome:
        outcome = Outcome(for_peer=messages, for_log=messages)
        for i, rail in enumerate(self.spec.input):
            if rail.rail == "pii":
                t0 = time.perf_counter()
                masked, found = _mask_segments(
                    _segments(outcome.for_log),
                    list(rail.entities),
                    tuple(rail.phone_regions or PHONE_REGIONS),
                )
                verdict = Verdict(
                    "pii",
                    "input",
                    rail.action,
                    bool(found),
                    ",".join(found),
                    int((time.perf_counter() - t0) * 1e6),
                )
                if found and rail.action == "mask":
                    outcome.for_log = _with_texts(outcome.for_log, masked)
                    if rail.mask_upstream:
                        outcome.for_peer = _with_texts(outcome.for_peer, masked)
            elif rail.rail == "prompt_attack":
                hit, detail, rule, took, score = self.attack_checks[i].check(messages)
                verdict = Verdict(
                    "prompt_attack", "input", rail.action, hit, detail, took, rule, score
                )
            else:
                text = "\n".join(t for _, t in _segments(messages))
                verdict = await self._regex_or_llm(self._key("input", i), rail, "input", text)
            outcome.verdicts.append(verdict)
            if verdict.hit and rail.action == "block":
                outcome.blocked = verdict
                break
        return outcome

    async def check_output(self, text: str) -> Outcome:
        outcome = Outcome(for_peer=text, for_log=text)
        for i, rail in enumerate(self.spec.output):
            if rail.rail == "pii":
                t0 = time.perf_counter()
                spans = find_pii(
                    outcome.for_log, list(rail.entities), tuple(rail.phone_regions or PHONE_REGIONS)
                )
                verdict = Verdict(
                    "pii",
                    "output",
                    rail.action,
                    bool(spans),
                    ",".join(sorted({s.entity for s in spans})),
                    int((time.perf_counter() - t0) * 1e6),
                )
                if spans and rail.action == "mask":
                    outcome.for_log = outcome.for_peer = mask(outcome.for_log, spans)
            else:
                verdict = await self._regex_or_llm(self._key("output", i), rail, "output", text)
            outcome.verdicts.append(verdict)
            if verdict.hit and rail.action == "block":
                outcome.blocked = verdict
                break
        return outcome


def mask_strings(
    value: Any, entities: tuple[str, ...], regions: tuple[str, ...] = PHONE_REGIONS
) -> Any:
    """Every string inside `value` with the given entities masked (for log rows)."""
    if isinstance(value, str):
        spans = find_pii(value, entities, regions)
        return mask(value, spans) if spans else value
    if isinstance(value, list):
        return [mask_strings(v, entities, regions) for v in value]
    if isinstance(value, dict):
        return {k: mask_strings(v, entities, regions) for k, v in value.items()}
    return value


def compile_guardrails(
    policies: PolicySet, detectors: Loaded | None = None
) -> tuple[dict[str, RouteRails], NemoRails]:
    """The rails of every route that has any, and the nemoguardrails engines they need
    (not started: call `start()` off the event loop). `detectors`: the trained prompt-attack
    detectors by name (`prompt_attack.load_detectors`)."""
    nemo = NemoRails(detectors or {})
    rails = {
        r.name: RouteRails(r.name, r.guardrails, nemo, policies.models[r.teacher], detectors)
        for r in policies.routes
        if r.guardrails.input or r.guardrails.output
    }
    return rails, nemo
