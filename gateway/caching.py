"""The request path's use of the response cache (`gateway/cache.py`): look up after the
input rails (exactly, then by similarity where the route opts in), store after a good
answer, audit sampled similarity hits.

Invariant: a hit is logged like any answer with `served_by: cache`, model `cache` (so its
cost is 0 while its baseline is still the teacher's price); exact hits are never audited, a
semantic hit is audited at the route's `audit.share` under the semantic cache's name, and a
semantic cache the distiller rolled back is not consulted. The distiller's curation keeps
only teacher answers, so hits never become training data.
"""

from __future__ import annotations

from typing import Any

from contracts.openai_shapes import answer_text, without_stream
from contracts.policy import SemanticCache
from gateway import dispatch
from gateway.cache import cache_key, split_request
from gateway.context import RequestContext
from gateway.guardrails.pii import PHONE_REGIONS, find_pii
from gateway.routing import Target


def _key(ctx: RequestContext, header: str) -> str | None:
    decision = ctx.chosen
    if decision.route.cache is None or header == "skip":
        return None
    return cache_key(decision.route.name, ctx.endpoint, ctx.upstream_body, header == "allow")


def _semantic(ctx: RequestContext) -> SemanticCache | None:
    """The route's semantic matching, unless it was rolled back at this threshold."""
    route = ctx.chosen.route
    policy = route.cache.semantic if route.cache is not None else None
    if policy is None or ctx.endpoint != "chat.completions":
        return None
    if ctx.router.states.get(route.name, policy.name) == "rolled_back":
        return None
    return policy


async def cache_lookup(ctx: RequestContext, header: str) -> dict[str, Any] | None:
    """The cached answer for this request (the record then says the cache served it)."""
    key = _key(ctx, header)
    ctx.cache_key = key or ""
    if key is None:
        return None
    route, cache = ctx.chosen.route, ctx.state.cache
    policy = ctx.chosen.route.cache
    assert policy is not None
    hit = await cache.lookup(route.name, key)
    result, reason, candidate = "hit", "cache hit", ""
    semantic = _semantic(ctx) if hit is None else None
    if semantic is not None:
        ctx.semantic = split_request(route.name, ctx.upstream_body, header == "allow")
        if ctx.semantic is not None:
            near = await cache.semantic.nearest(
                route.name, *ctx.semantic, semantic, policy.ttl_s, policy.max_entries
            )
            if near is not None:
                hit = await cache.lookup(route.name, near[0])
                result, candidate = "semantic_hit", semantic.name
                reason = f"semantic cache hit: similarity {near[1]:.3f}"
    ctx.state.metrics.cache_lookups.labels(route.name, result if hit else "miss").inc()
    if hit is None:
        return None
    rec = ctx.record
    rec.served_by, rec.served_model, rec.candidate = "cache", "cache", candidate
    rec.route_reason = reason
    return hit


def cache_store(ctx: RequestContext, answer: dict[str, Any] | None) -> None:
    rec, policy = ctx.record, ctx.chosen.route.cache if ctx.decision else None
    if not ctx.cache_key or policy is None or answer is None or rec.served_by == "cache":
        return
    regions = rec.mask_regions or PHONE_REGIONS
    if rec.mask_entities and find_pii(answer_text(answer), rec.mask_entities, regions):
        return  # a masking route never keeps raw personal data in the cache
    route, cache = ctx.chosen.route.name, ctx.state.cache
    ctx.state.spawn(cache.store(route, ctx.cache_key, answer, policy))
    if ctx.semantic is None:
        return
    ctx_key, text = ctx.semantic
    if rec.mask_entities and find_pii(text, rec.mask_entities, regions):
        return  # nor anything derived from a question that holds it
    ctx.state.spawn(
        cache.semantic.add(route, ctx_key, ctx.cache_key, text, policy.ttl_s, policy.max_entries)
    )


def maybe_audit_hit(ctx: RequestContext, answer: dict[str, Any]) -> None:
    """A sampled semantic hit is re-asked to the teacher: its audits roll it back."""
    rec, route = ctx.record, ctx.chosen.route
    if not rec.candidate.startswith("semantic-cache") or not ctx.router.sample(route.audit.share):
        return
    teacher = Target(
        route.teacher,
        ctx.router.policies.models[route.teacher],
        "teacher",
        f"audit of {rec.candidate}",
    )
    dispatch.spawn(
        ctx.state, dispatch.audit(ctx, without_stream(ctx.upstream_body), answer, teacher)
    )
