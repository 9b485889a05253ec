"""Per key and route limits on requests and tokens per minute (token buckets).

Requests are charged when admitted. Tokens are charged after the answer, from its real usage;
the bucket may go negative, and then the next requests wait until it refills. This is the
usual TPM contract: a request is never cut off half-way for its own size.

Invariant: in-memory and O(1) per request; limits are per gateway replica (a cluster-wide
limit divides the configured numbers by the replica count).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from contracts.errors import ApiError
from contracts.policy import RateLimit


@dataclass(slots=True)
class _Bucket:
    capacity: float
    level: float
    at: float = field(default_factory=time.monotonic)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.capacity / 60.0)
        self.at = now

    def wait_s(self, need: float) -> float:
        return max(0.0, (need - self.level) * 60.0 / self.capacity)


class RateLimiter:
    def __init__(self) -> None:
        self._requests: dict[tuple[str, str], _Bucket] = {}
        self._tokens: dict[tuple[str, str], _Bucket] = {}

    def admit(self, key_id: str, route: str, limit: RateLimit | None) -> dict[str, str]:
        """Admit or raise a 429 (with `Retry-After`); returns the `x-ratelimit-*` headers
        every answer of a limited route carries, named as OpenAI names them."""
        if limit is None:
            return {}
        now = time.monotonic()
        k = (key_id, route)
        wait = 0.0
        headers: dict[str, str] = {}
        if limit.tokens_per_minute:
            tb = self._tokens.setdefault(
                k, _Bucket(limit.tokens_per_minute, limit.tokens_per_minute)
            )
            tb.capacity = limit.tokens_per_minute
            tb.refill(now)
            if tb.level <= 0:
                wait = tb.wait_s(1)
            headers |= _headers("tokens", tb)
        if limit.requests_per_minute:
            rb = self._requests.setdefault(
                k, _Bucket(limit.requests_per_minute, limit.requests_per_minute)
            )
            rb.capacity = limit.requests_per_minute
            rb.refill(now)
            if rb.level < 1:
                wait = max(wait, rb.wait_s(1))
            elif not wait:
                rb.level -= 1
            headers |= _headers("requests", rb)
        if wait:
            headers["retry-after"] = str(math.ceil(wait))
            headers["retry-after-ms"] = str(math.ceil(wait * 1000))
            raise ApiError(
                429,
                f"Rate limit reached for route `{route}`; retry in {math.ceil(wait)}s.",
                code="rate_limit_exceeded",
                headers=headers,
            )
        return headers

    def charge_tokens(self, key_id: str, route: str, tokens: int) -> None:
        bucket = self._tokens.get((key_id, route))
        if bucket is not None:
            bucket.refill(time.monotonic())
            bucket.level -= tokens


def _headers(what: str, bucket: _Bucket) -> dict[str, str]:
    left = max(0, math.floor(bucket.level))
    reset = (bucket.capacity - bucket.level) * 60.0 / bucket.capacity
    return {
        f"x-ratelimit-limit-{what}": str(int(bucket.capacity)),
        f"x-ratelimit-remaining-{what}": str(left),
        f"x-ratelimit-reset-{what}": f"{max(0.0, reset):.3g}s",
    }
