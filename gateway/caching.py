"""The request path's use of the response cache (`gateway/cache.py`): look up after the
input rails, store after a good answer.

Invariant: a hit is logged like any answer with `served_by: cache`, model `cache` (so its
cost is 0 while its baseline is still the teacher's price) and no audit or shadow call; the
distiller's curation keeps only teacher answers, so hits never become training data.
"""

from __future__ import annotations

from typing import Any

from contracts.openai_shapes import answer_text
from gateway.cache import cache_key
from gateway.context import RequestContext
from gateway.guardrails.pii import PHONE_REGIONS, find_pii


def _key(ctx: RequestContext, header: str) -> str | None:
    decision = ctx.chosen
    if decision.route.cache is None or header == "skip":
        return None
    return cache_key(decision.route.name, ctx.endpoint, ctx.upstream_body, header == "allow")


async def cache_lookup(ctx: RequestContext, header: str) -> dict[str, Any] | None:
    """The cached answer for this request (the record then says the cache served it)."""
    key = _key(ctx, header)
    ctx.cache_key = key or ""
    if key is None:
        return None
    route = ctx.chosen.route.name
    hit = await ctx.state.cache.lookup(route, key)
    ctx.state.metrics.cache_lookups.labels(route, "hit" if hit else "miss").inc()
    if hit is None:
        return None
    rec = ctx.record
    rec.served_by, rec.served_model, rec.candidate = "cache", "cache", ""
    rec.route_reason = "cache hit"
    return hit


def cache_store(ctx: RequestContext, answer: dict[str, Any] | None) -> None:
    rec, policy = ctx.record, ctx.chosen.route.cache if ctx.decision else None
    if not ctx.cache_key or policy is None or answer is None or rec.served_by == "cache":
        return
    regions = rec.mask_regions or PHONE_REGIONS
    if rec.mask_entities and find_pii(answer_text(answer), rec.mask_entities, regions):
        return  # a masking route never keeps raw personal data in the cache
    ctx.state.spawn(ctx.state.cache.store(ctx.chosen.route.name, ctx.cache_key, answer, policy))
