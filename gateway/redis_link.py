"""The gateway's one Redis (or Valkey) connection, for state shared by workers and replicas.

Rate-limit buckets and budget counters live here when `redis.url` is set, so N workers and
M replicas enforce one limit. Every call is one Lua script (atomic on the server) bounded by
`redis.timeout_s`; a failure raises `SharedStateDown` and marks the link down, which
`/healthz` and `flywheel_redis_up` report, until a later call succeeds.

Invariant: callers decide what a down Redis means (rate limits fail open or closed per
route; budgets fail open, since spend is still logged to ClickHouse).
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError


class SharedStateDown(Exception):
    """Redis did not answer (or refused) within its timeout."""


class RedisLink:
    def __init__(self, url: str, timeout_s: float, max_connections: int = 64) -> None:
        self.url = url
        # A bounded pool that makes a call wait for a free connection (up to the timeout):
        # redis-py's default pool raises "Too many connections" past 100, which under a burst
        # of concurrent requests read as Redis being down (seen: 64 in flight, limits and
        # budgets not checked).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self.client = aioredis.Redis(connection_pool=pool)
        self._scripts: dict[str, Any] = {}
        self.ok = True
        self.error = ""
        self.down_since = 0.0

    async def run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        try:
            result = await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as e:
            if self.ok:
                self.down_since = time.time()
            self.ok, self.error = False, f"{type(e).__name__}: {e}"
            raise SharedStateDown(self.error) from e
        self.ok, self.error = True, ""
        return result

    async def close(self) -> None:
        await self.client.aclose()
