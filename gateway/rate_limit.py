"""Per key and route limits on requests and tokens per minute (token buckets).

Requests are charged when admitted. Tokens are charged after the answer, from its real usage;
the bucket may go negative, and then the next requests wait until it refills. This is the
usual TPM contract: a request is never cut off half-way for its own size.

Invariant: with `redis.url` the buckets live in Redis (one Lua script per check, atomic), so
every worker and replica draws from the same bucket; without it they live in this process.
A Redis that does not answer admits (route `rate_limit.when_redis_down: open`, the default)
or refuses with a 503 (`closed`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from contracts.errors import ApiError
from contracts.policy import RateLimit
from gateway.redis_link import RedisLink, SharedStateDown

log = logging.getLogger("flywheel.rate_limit")

# KEYS[1]: the bucket. ARGV: capacity per minute, need (1 takes a request; 0 only asks that
# the bucket is above zero), add (tokens to charge, negative). Returns {allowed, level}.
_BUCKET = """
local cap = tonumber(ARGV[1]); local need = tonumber(ARGV[2]); local add = tonumber(ARGV[3])
local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
local v = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(v[1]) or cap
local at = tonumber(v[2]) or now
level = math.min(cap, level + (now - at) * cap / 60000) + add
local allowed = 1
if need > 0 then
  if level >= need then level = level - need else allowed = 0 end
elseif level <= 0 then
  allowed = 0
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', now)
redis.call('PEXPIRE', KEYS[1], 180000)
return {allowed, tostring(level)}
"""


@dataclass(slots=True)
class _Bucket:
    capacity: float
    level: float
    at: float = field(default_factory=time.monotonic)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.capacity / 60.0)
        self.at = now


def _wait_s(capacity: float, level: float, need: float) -> float:
    return max(0.0, (need - level) * 60.0 / capacity)


class RateLimiter:
    def __init__(self, link: RedisLink | None = None) -> None:
        self.link = link
        self._requests: dict[tuple[str, str], _Bucket] = {}
        self._tokens: dict[tuple[str, str], _Bucket] = {}

    async def admit(self, key_id: str, route: str, limit: RateLimit | None) -> dict[str, str]:
        """Admit or raise a 429 (with `Retry-After`); returns the `x-ratelimit-*` headers
        every answer of a limited route carries, named as OpenAI names them."""
        if limit is None:
            return {}
        wait = 0.0
        headers: dict[str, str] = {}
        checks = (
            ("tokens", limit.tokens_per_minute, 0),
            ("requests", limit.requests_per_minute, 1),
        )
        for what, capacity, need in checks:
            if not capacity:
                continue
            try:
                allowed, level = await self._take(what, key_id, route, capacity, need)
            except SharedStateDown as e:
                if limit.when_redis_down == "closed":
                    raise ApiError(
                        503,
                        "Rate limits cannot be checked right now (shared state unavailable); "
                        "this route refuses until they can.",
                        code="rate_limit_unavailable",
                    ) from e
                log.warning("rate limit not checked (Redis down), admitting: %s", e)
                return {}
            headers |= _headers(what, capacity, level)
            if not allowed:
                wait = max(wait, _wait_s(capacity, level, max(need, 1)))
                if what == "tokens":
                    break  # out of tokens: do not take a request from the other bucket
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

    async def _take(
        self, what: str, key_id: str, route: str, capacity: int, need: int, add: float = 0
    ) -> tuple[bool, float]:
        if self.link is not None:
            allowed, level = await self.link.run(
                _BUCKET, [f"fw:rl:{what}:{route}:{key_id}"], [capacity, need, add]
            )
            return bool(allowed), float(level)
        buckets = self._tokens if what == "tokens" else self._requests
        bucket = buckets.setdefault((key_id, route), _Bucket(capacity, capacity))
        bucket.capacity = capacity
        bucket.refill(time.monotonic())
        bucket.level += add
        if need > 0:
            if bucket.level >= need:
                bucket.level -= need
                return True, bucket.level
            return False, bucket.level
        return bucket.level > 0, bucket.level

    async def charge_tokens(self, key_id: str, route: str, limit: RateLimit, tokens: int) -> None:
        if not limit.tokens_per_minute or not tokens:
            return
        try:
            await self._take("tokens", key_id, route, limit.tokens_per_minute, 0, -tokens)
        except SharedStateDown as e:
            log.warning("tokens not charged (Redis down): %s", e)


def _headers(what: str, capacity: float, level: float) -> dict[str, str]:
    left = max(0, math.floor(level))
    reset = max(0.0, (capacity - level) * 60.0 / capacity)
    return {
        f"x-ratelimit-limit-{what}": str(int(capacity)),
        f"x-ratelimit-remaining-{what}": str(left),
        f"x-ratelimit-reset-{what}": f"{reset:.3g}s",
    }
