"""The response cache: a repeated request answered without an upstream call.

The key is a hash of everything that determines the answer (route, endpoint, the body the
upstream would get minus streaming and bookkeeping fields), so a differing parameter
misses. Only deterministic requests are cached (`temperature: 0`, embeddings) unless the
client opts in (`x-flywheel-cache: allow`). A route that masks PII caches only answers with
no PII in them, so the cache never holds raw personal data. Near-identical questions may
find each other through `gateway/semantic_cache.py`, which maps them to keys of this cache.

Invariant: bounded (`max_entries` per route, oldest out first) and expiring (`ttl_s`), in
this process or in Redis; entries are whole answers, copied out, never shared with a
request.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

import orjson

from contracts.openai_shapes import content_text
from contracts.policy import Cache
from gateway.redis_link import RedisLink, SharedStateDown
from gateway.semantic_cache import SemanticIndex

# Fields that do not change the answer (or are the gateway's own).
_NOT_IN_KEY = frozenset(
    {"stream", "stream_options", "user", "metadata", "tags", "flywheel_metadata", "flywheel_tags"}
)


def cache_key(route: str, endpoint: str, body: dict[str, Any], opt_in: bool) -> str | None:
    """The key for this request, or None when it is not cacheable."""
    deterministic = endpoint == "embeddings" or body.get("temperature") == 0
    if not (deterministic or opt_in):
        return None
    keyed = {k: v for k, v in body.items() if k not in _NOT_IN_KEY}
    try:
        blob = orjson.dumps([route, endpoint, keyed], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    return hashlib.sha256(blob).hexdigest()


def split_request(route: str, body: dict[str, Any], opt_in: bool) -> tuple[str, str] | None:
    """For semantic matching: (context key, last user turn's text), the key hashing the
    whole request but that text; None when the request is not cacheable or does not end in
    a user turn."""
    messages = body.get("messages")
    if not (body.get("temperature") == 0 or opt_in) or not isinstance(messages, list):
        return None
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    keyed = {k: v for k, v in body.items() if k not in _NOT_IN_KEY}
    keyed["messages"] = [*messages[:-1], {**last, "content": None}]
    try:
        blob = orjson.dumps([route, keyed], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    return hashlib.sha256(blob).hexdigest(), content_text(last.get("content"))


# KEYS[1]: the entry, KEYS[2]: the route's index. ARGV: answer, ttl ms, max entries, now ms.
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
  redis.call('DEL', unpack(old))
end
return 1
"""


class ResponseCache:
    """In this process, or in Redis (shared by every worker and replica) when given a
    link; a Redis that does not answer is a miss, never an error."""

    def __init__(self, link: RedisLink | None = None) -> None:
        self.link = link
        self.semantic = SemanticIndex(link)
        # Answers as JSON bytes: a hit parses a fresh copy (~10x cheaper than a deepcopy).
        self._routes: dict[str, OrderedDict[str, tuple[float, bytes]]] = {}

    async def lookup(self, route: str, key: str) -> dict[str, Any] | None:
        if self.link is None:
            return self.get(route, key)
        try:
            raw = await self.link.client.get(f"fw:cache:{route}:{key}")
        except Exception:  # down or slow: answer from the upstream instead
            return None
        return orjson.loads(raw) if raw else None

    async def store(self, route: str, key: str, answer: dict[str, Any], policy: Cache) -> None:
        if self.link is None:
            self.put(route, key, answer, policy)
            return
        entry = f"fw:cache:{route}:{key}"
        args = [
            orjson.dumps(answer),
            int(policy.ttl_s * 1000),
            policy.max_entries,
            int(time.time() * 1000),
        ]
        try:
            await self.link.run(_PUT, [entry, f"fw:cache-index:{route}"], args)
        except SharedStateDown:
            pass  # not cached this time; the link reports Redis down

    def get(self, route: str, key: str) -> dict[str, Any] | None:
        entries = self._routes.get(route)
        hit = entries.get(key) if entries is not None else None
        if hit is None or entries is None:
            return None
        expires, answer = hit
        if time.monotonic() >= expires:
            del entries[key]
            return None
        entries.move_to_end(key)
        fresh: dict[str, Any] = orjson.loads(answer)
        return fresh

    def put(self, route: str, key: str, answer: dict[str, Any], policy: Cache) -> None:
        entries = self._routes.setdefault(route, OrderedDict())
        entries[key] = (time.monotonic() + policy.ttl_s, orjson.dumps(answer))
        entries.move_to_end(key)
        while len(entries) > policy.max_entries:
            entries.popitem(last=False)
