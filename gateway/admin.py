"""Admin API: the loaded policy and its status, and route explanations.

Invariant: every endpoint here needs an admin key; app keys get 403, no key 401.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from contracts.errors import ApiError
from contracts.openai_shapes import fingerprint_system_prompt
from gateway.auth import require_role
from gateway.bodies import read_json, validate
from gateway.dashboard.api import json_response
from gateway.routing import RequestFacts
from gateway.state import GatewayState


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    key: str | None = Field(default=None, description="an app key: app and team come from it")
    app: str = ""
    team: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)


def admin_principal(request: Request) -> tuple[GatewayState, str]:
    """The gateway state and the admin key's id; 401/403 for anyone else."""
    state: GatewayState = request.app.state.gw
    who = state.keys.authenticate(request.headers)
    require_role(who, "admin")
    return state, who.key_id


def _admin(request: Request) -> GatewayState:
    return admin_principal(request)[0]


async def get_policies(request: Request) -> Response:
    state = _admin(request)
    router = state.router
    return json_response(
        {
            **state.policy_status,
            "serving_version": router.policy_version,
            "routes": [
                {
                    "name": r.name,
                    "match": r.match.model_dump(exclude_defaults=True),
                    "teacher": r.teacher,
                    "candidates": [c.name for c in r.candidates],
                }
                for r in router.policies.routes
            ],
            "candidate_states": [
                {"route": route, "candidate": cand, "state": st}
                for (route, cand), st in sorted(router.states.states.items())
            ],
        }
    )


def facts_for(state: GatewayState, req: ExplainRequest) -> RequestFacts:
    app, team = req.app, req.team
    if req.key:
        principal = state.keys.authenticate(Headers({"authorization": f"Bearer {req.key}"}))
        app, team = principal.app, principal.team
    elif app and not team and app in state.config.apps:
        team = state.config.apps[app].team
    return RequestFacts(
        app=app,
        team=team,
        model=req.model,
        headers={k.lower(): v for k, v in req.headers.items()},
        metadata=req.metadata,
        tags=tuple(req.tags),
        system_fingerprint=fingerprint_system_prompt(req.messages),
    )


async def explain_route(request: Request) -> Response:
    state = _admin(request)
    body = await read_json(request, 1024 * 1024)
    req = validate(ExplainRequest, body)
    assert isinstance(req, ExplainRequest)
    try:
        return json_response(state.router.explain(facts_for(state, req)))
    except ApiError as e:
        if e.code != "model_not_found":
            raise
        return json_response(
            {"route": None, "why": e.message, "policy_version": state.router.policy_version},
            status=404,
        )
