"""Who is looking at the dashboard: a key in the `Authorization` header, or a session cookie
set by the login form.

The cookie holds `key_id.expiry.signature`, never the key: the signature is an HMAC keyed
by the key's SHA-256, so every replica with the same config accepts it, and rotating the key
ends its sessions. HttpOnly and SameSite=Strict keep it out of scripts and cross-site posts.

Invariant: `principal` returns a principal whose role is one of those asked for, and raises
401 (no or bad credentials) or 403 (a valid key of another role, e.g. an app key) otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from starlette.requests import Request

from contracts.errors import ApiError
from gateway.auth import KeyRing, Principal, require_role

COOKIE = "flywheel_session"
SESSION_S = 12 * 3600
DASHBOARD_ROLES = ("admin", "finance", "reviewer")


def _sign(digest: str, key_id: str, expiry: int) -> str:
    return hmac.new(digest.encode(), f"{key_id}.{expiry}".encode(), hashlib.sha256).hexdigest()


def issue(keys: KeyRing, raw_key: str, now: float | None = None) -> tuple[Principal, str]:
    """The principal of a raw key and a session cookie value for it; 401 for a bad key."""
    principal = keys.by_token(raw_key.strip())
    if principal is None:
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    found = keys.by_id(principal.key_id)
    assert found is not None
    expiry = int((now or time.time()) + SESSION_S)
    return principal, f"{principal.key_id}.{expiry}.{_sign(found[0], principal.key_id, expiry)}"


def from_cookie(keys: KeyRing, value: str, now: float | None = None) -> Principal | None:
    try:
        key_id, expiry_s, signature = value.rsplit(".", 2)
        expiry = int(expiry_s)
    except ValueError:
        return None
    found = keys.by_id(key_id)
    if found is None or expiry < (now or time.time()):
        return None
    if not hmac.compare_digest(signature, _sign(found[0], key_id, expiry)):
        return None
    return found[1]


def principal(keys: KeyRing, request: Request, *roles: str) -> Principal:
    if request.headers.get("authorization") or request.headers.get("api-key"):
        who = keys.authenticate(request.headers)
    else:
        cookie = request.cookies.get(COOKIE)
        found = from_cookie(keys, cookie) if cookie else None
        if found is None:
            raise ApiError(
                401,
                "Sign in at /dashboard or send `Authorization: Bearer <key>`.",
                code="missing_api_key",
            )
        who = found
    require_role(who, *roles)
    return who
