"""API keys to principals. Keys are kept only as SHA-256 digests.

Invariant: `authenticate` returns a principal for a configured key and raises 401 otherwise;
`require_role` raises 403 for a valid key of the wrong role.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from starlette.datastructures import Headers

from contracts.errors import ApiError
from gateway.config import GatewayConfig


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    role: str
    app: str
    team: str
    train_on_traffic: bool


class KeyRing:
    def __init__(self, config: GatewayConfig) -> None:
        self._by_digest: dict[str, Principal] = {}
        self._digest_by_id: dict[str, str] = {}
        for key in config.keys:
            self._digest_by_id[key.id] = key.digest()
            app = config.apps.get(key.app) if key.app else None
            self._by_digest[key.digest()] = Principal(
                key_id=key.id,
                role=key.role,
                app=key.app or "",
                team=app.team if app else "",
                train_on_traffic=app.train_on_traffic if app else False,
            )

    def by_id(self, key_id: str) -> tuple[str, Principal] | None:
        """(digest, principal) of a configured key id: dashboard sessions are signed with it."""
        digest = self._digest_by_id.get(key_id)
        return None if digest is None else (digest, self._by_digest[digest])

    def by_token(self, token: str) -> Principal | None:
        return self._by_digest.get(hashlib.sha256(token.encode()).hexdigest())

    def authenticate(self, headers: Headers) -> Principal:
        raw = headers.get("authorization", "")
        # Bearer (OpenAI SDKs), `api-key` (Azure-style clients), `x-api-key` (Anthropic SDK).
        token = (
            raw[7:].strip()
            if raw[:7].lower() == "bearer "
            else headers.get("api-key", "") or headers.get("x-api-key", "")
        )
        if not token:
            raise ApiError(
                401,
                "Missing API key: send `Authorization: Bearer <key>`.",
                code="missing_api_key",
            )
        principal = self.by_token(token)
        if principal is None:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return principal


def require_role(principal: Principal, *roles: str) -> None:
    if principal.role not in roles:
        raise ApiError(
            403,
            f"This key's role ({principal.role}) may not use this endpoint; "
            f"it needs one of: {', '.join(roles)}.",
            code="forbidden",
        )
