"""Leases: at most one distiller process trains a route at a time.

- `RedisLeases` (when `redis.url` is set): `SET name token NX PX ttl`; renewal and release
  only by the holder's token (a Lua compare-and-set), so a lease that lapsed and was taken
  over is never extended or freed by its old holder.
- `StoreLeases` (ClickHouse, no Redis): ClickHouse has no compare-and-set, so a claimant
  inserts its claim, waits `settle_s` for concurrent claims to become visible, and the
  earliest live claim (by claim time, then token) wins; every claimant reads the same rows
  and so agrees on the winner. Renewal inserts a row with a later expiry; release, a row
  marked released.

Invariant: `acquire` returns a lease only to the one live claimant that wins; a holder that
stops renewing loses the lease `ttl_s` after its last renewal.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from store import Store


@dataclass(frozen=True)
class Lease:
    name: str
    token: str
    holder: str
    claimed_at: datetime


class Leases(Protocol):
    def acquire(self, name: str, holder: str, ttl_s: float) -> Lease | None: ...

    def renew(self, lease: Lease, ttl_s: float) -> bool: ...

    def release(self, lease: Lease) -> None: ...


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLeases:
    def __init__(self, url: str, prefix: str = "flywheel:lease:") -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=5)
        self._prefix = prefix

    def acquire(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        token = f"{holder}:{uuid.uuid4().hex}"
        if self._redis.set(self._prefix + name, token, nx=True, px=int(ttl_s * 1000)):
            return Lease(name, token, holder, datetime.now(UTC))
        return None

    def renew(self, lease: Lease, ttl_s: float) -> bool:
        done = self._redis.eval(
            _RENEW, 1, self._prefix + lease.name, lease.token, int(ttl_s * 1000)
        )
        return bool(done)

    def release(self, lease: Lease) -> None:
        self._redis.eval(_RELEASE, 1, self._prefix + lease.name, lease.token)

    def holder(self, name: str) -> str | None:
        raw = self._redis.get(self._prefix + name)
        return raw.decode().split(":", 1)[0] if raw else None


_CLAIMS = """
SELECT token, any(holder) AS holder, min(claimed_at) AS claimed_at,
       max(expires_at) AS expires_at, max(released) AS released
FROM leases WHERE name = {name:String}
GROUP BY token
"""
_COLUMNS = ["name", "holder", "token", "claimed_at", "expires_at", "released"]


class StoreLeases:
    def __init__(self, store: Store, settle_s: float = 1.0) -> None:
        self.store = store
        self.settle_s = settle_s

    def _live(self, name: str) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = self.store.query_dicts(_CLAIMS, {"name": name})
        live = [r for r in rows if not r["released"] and r["expires_at"].replace(tzinfo=UTC) > now]
        return sorted(live, key=lambda r: (r["claimed_at"], r["token"]))

    def _write(self, lease: Lease, ttl_s: float, released: bool = False) -> None:
        expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
        row = [lease.name, lease.holder, lease.token, lease.claimed_at, expires, released]
        self.store.insert_rows("leases", [row], _COLUMNS)

    def acquire(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        if ttl_s <= 2 * self.settle_s:
            raise ValueError(f"a lease must outlive the settle time ({self.settle_s} s) twice")
        if self._live(name):
            return None
        lease = Lease(name, f"{holder}:{uuid.uuid4().hex}", holder, datetime.now(UTC))
        self._write(lease, ttl_s)
        time.sleep(self.settle_s)
        live = self._live(name)
        if live and live[0]["token"] == lease.token:
            return lease
        self._write(lease, 0, released=True)
        return None

    def renew(self, lease: Lease, ttl_s: float) -> bool:
        live = self._live(lease.name)
        if not live or live[0]["token"] != lease.token:
            return False
        self._write(lease, ttl_s)
        return True

    def release(self, lease: Lease) -> None:
        self._write(lease, 0, released=True)

    def holder(self, name: str) -> str | None:
        live = self._live(name)
        return str(live[0]["holder"]) if live else None
