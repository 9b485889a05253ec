"""Who is looking at the dashboard: a key in the `Authorization` header, or a session cookie
set by the login form.

The cookie holds `key_id.expiry.nonce.signature`, never the key. The signature is an HMAC
under the server's session secret (`server.session_secret`, or a random one kept in
`<data_dir>/session.key`, mode 0600) over the key id, expiry, nonce and the key's digest: a
config that holds keys as `sha256:` does not let anyone forge a cookie, rotating a key ends
its sessions, and replicas that share the secret accept each other's cookies. Signing out
revokes the cookie's nonce everywhere until it would have expired (`revocations.py`: in
Redis, or in the shared store). HttpOnly and
SameSite=Strict keep it out of scripts and cross-site posts.

Invariant: `principal` returns a principal whose role is one of those asked for, and raises
401 (no, bad, expired or revoked credentials) or 403 (a valid key of another role) otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from starlette.requests import Request

from contracts.errors import ApiError
from gateway.auth import KeyRing, Principal, require_role
from gateway.dashboard.revocations import InProcessRevocations, Revocations

COOKIE = "flywheel_session"
SESSION_S = 12 * 3600
DASHBOARD_ROLES = ("admin", "finance", "reviewer")


def load_secret(configured: str | None, data_dir: Path) -> bytes:
    """The configured secret, else the one kept in the data dir (made on first start)."""
    if configured:
        return configured.encode()
    path = data_dir / "session.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


class Sessions:
    def __init__(self, keys: KeyRing, secret: bytes, revoked: Revocations | None = None) -> None:
        self.keys = keys
        self._secret = secret
        self.revoked: Revocations = revoked or InProcessRevocations()

    def _sign(self, key_id: str, expiry: int, nonce: str, digest: str) -> str:
        message = f"{key_id}.{expiry}.{nonce}.{digest}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, raw_key: str, now: float | None = None) -> tuple[Principal, str]:
        """The principal of a raw key and a session cookie value; 401 for a bad key."""
        principal = self.keys.by_token(raw_key.strip())
        if principal is None:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        found = self.keys.by_id(principal.key_id)
        assert found is not None
        expiry = int((now or time.time()) + SESSION_S)
        nonce = secrets.token_hex(8)
        signature = self._sign(principal.key_id, expiry, nonce, found[0])
        return principal, f"{principal.key_id}.{expiry}.{nonce}.{signature}"

    def _signed(self, value: str, now: float | None = None) -> tuple[Principal, str, int] | None:
        """(principal, nonce, expiry) of a well-signed, unexpired cookie."""
        try:
            key_id, expiry_s, nonce, signature = value.rsplit(".", 3)
            expiry = int(expiry_s)
        except ValueError:
            return None
        found = self.keys.by_id(key_id)
        if found is None or expiry < (now or time.time()):
            return None
        if not hmac.compare_digest(signature, self._sign(key_id, expiry, nonce, found[0])):
            return None
        return found[1], nonce, expiry

    async def check(self, value: str, now: float | None = None) -> Principal | None:
        signed = self._signed(value, now)
        if signed is None or await self.revoked.contains(signed[1]):
            return None
        return signed[0]

    async def revoke(self, value: str) -> None:
        """Sign-out: this cookie no longer works anywhere, even if a copy is replayed."""
        signed = self._signed(value)
        if signed is not None:
            await self.revoked.add(signed[1], signed[2])

    async def principal(self, request: Request, *roles: str) -> Principal:
        if request.headers.get("authorization") or request.headers.get("api-key"):
            who = self.keys.authenticate(request.headers)
        else:
            cookie = request.cookies.get(COOKIE)
            found = await self.check(cookie) if cookie else None
            if found is None:
                raise ApiError(
                    401,
                    "Sign in at /dashboard or send `Authorization: Bearer <key>`.",
                    code="missing_api_key",
                )
            who = found
        require_role(who, *roles)
        return who
