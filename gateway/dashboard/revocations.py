"""Signed-out session cookies, shared by every process that checks them.

A dashboard cookie is signed, so any worker or replica accepts it until it expires; signing
out must therefore be known to all of them, not only to the process that served the
sign-out. Where it is kept:
- Redis (`redis.url` set): a key per revoked nonce, expiring with the cookie;
- else the store (ClickHouse, which every worker and replica shares): a row per nonce.
Each process also remembers the nonces it revoked or saw revoked, so a repeated check is
free.

Invariant: a revoked nonce is refused everywhere from the moment `add` returns; a store or
Redis that cannot answer refuses the cookie (503) rather than accept a possibly revoked one.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

from contracts.errors import ApiError
from gateway.redis_link import RedisLink
from store import Store


class Revocations(Protocol):
    async def add(self, nonce: str, expiry: int) -> None: ...

    async def contains(self, nonce: str) -> bool: ...


class _Known:
    """This process's own memory of revoked nonces (until each would have expired)."""

    def __init__(self) -> None:
        self._nonces: dict[str, int] = {}

    def remember(self, nonce: str, expiry: int) -> None:
        now = int(time.time())
        self._nonces = {n: e for n, e in self._nonces.items() if e > now}
        self._nonces[nonce] = expiry

    def __contains__(self, nonce: str) -> bool:
        return nonce in self._nonces


def _unavailable(e: Exception) -> ApiError:
    return ApiError(
        503, f"Cannot check the session (shared state unavailable: {e}).", code="unavailable"
    )


class InProcessRevocations:
    """One process, no shared state (tests, a single worker without Redis or store)."""

    def __init__(self) -> None:
        self._known = _Known()

    async def add(self, nonce: str, expiry: int) -> None:
        self._known.remember(nonce, expiry)

    async def contains(self, nonce: str) -> bool:
        return nonce in self._known


class _Shared:
    """This process's memory in front of a shared list: `_put` and `_has` reach the list."""

    def __init__(self) -> None:
        self._known = _Known()

    async def _put(self, nonce: str, expiry: int) -> None:
        raise NotImplementedError

    async def _has(self, nonce: str) -> bool:
        raise NotImplementedError

    async def add(self, nonce: str, expiry: int) -> None:
        self._known.remember(nonce, expiry)
        try:
            await self._put(nonce, expiry)
        except Exception as e:
            raise _unavailable(e) from e

    async def contains(self, nonce: str) -> bool:
        if nonce in self._known:
            return True
        try:
            return await self._has(nonce)
        except Exception as e:
            raise _unavailable(e) from e


class RedisRevocations(_Shared):
    def __init__(self, link: RedisLink) -> None:
        super().__init__()
        self.link = link

    async def _put(self, nonce: str, expiry: int) -> None:
        ttl = max(1, expiry - int(time.time()))
        await self.link.client.set(f"fw:revoked:{nonce}", b"1", ex=ttl)

    async def _has(self, nonce: str) -> bool:
        return bool(await self.link.client.exists(f"fw:revoked:{nonce}"))


class StoreRevocations(_Shared):
    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    async def _put(self, nonce: str, expiry: int) -> None:
        row = [nonce, datetime.fromtimestamp(expiry, UTC)]
        await asyncio.to_thread(
            self.store.insert_rows, "session_revocations", [row], ["nonce", "expires_at"]
        )

    async def _has(self, nonce: str) -> bool:
        rows = await asyncio.to_thread(
            self.store.query_rows,
            "SELECT count() FROM session_revocations WHERE nonce = {n:String}",
            {"n": nonce},
        )
        return bool(rows and int(rows[0][0]))
