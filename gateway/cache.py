"""The response cache: a repeated request answered without an upstream call.

The key is a hash of everything that determines the answer (route, endpoint, the body the
upstream would get minus streaming and bookkeeping fields), so a differing parameter
misses. Only deterministic requests are cached (`temperature: 0`, embeddings) unless the
client opts in (`x-flywheel-cache: allow`). A route that masks PII caches only answers with
no PII in them, so the cache never holds raw personal data.

Invariant: in memory, bounded (`max_entries` per route, least recently used out first) and
expiring (`ttl_s`); entries are whole answers, copied out, never shared with a request.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import OrderedDict
from typing import Any

import orjson

from contracts.policy import Cache

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


class ResponseCache:
    def __init__(self) -> None:
        self._routes: dict[str, OrderedDict[str, tuple[float, dict[str, Any]]]] = {}

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
        return copy.deepcopy(answer)

    def put(self, route: str, key: str, answer: dict[str, Any], policy: Cache) -> None:
        entries = self._routes.setdefault(route, OrderedDict())
        entries[key] = (time.monotonic() + policy.ttl_s, copy.deepcopy(answer))
        entries.move_to_end(key)
        while len(entries) > policy.max_entries:
            entries.popitem(last=False)
