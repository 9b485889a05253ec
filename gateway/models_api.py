"""`GET /v1/models` and `GET /v1/models/{id}`: what this key may call.

Invariant: a key sees exactly the model names of routes that may match its app and team
(a route limited to other apps is not listed; a catch-all route lists its teacher and
backups), and `retrieve` answers exactly for the names a request would be served for.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from contracts.errors import ApiError
from gateway.auth import Principal, require_role
from gateway.state import GatewayState


def _caller(request: Request) -> tuple[GatewayState, Principal]:
    state: GatewayState = request.app.state.gw
    principal = state.keys.authenticate(request.headers)
    require_role(principal, *state.config.server.model_api_roles)
    return state, principal


def _model(alias: str) -> dict[str, object]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "flywheel"}


def _visible(state: GatewayState, principal: Principal) -> list[str]:
    return state.router.aliases(principal.app, principal.team)


async def list_models(request: Request) -> Response:
    state, principal = _caller(request)
    data = [_model(alias) for alias in _visible(state, principal)]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def retrieve_model(request: Request) -> Response:
    state, principal = _caller(request)
    alias = request.path_params["model"]
    if not state.router.answers(alias, principal.app, principal.team):
        raise ApiError(
            404,
            f"The model '{alias}' does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    return Response(orjson.dumps(_model(alias)), media_type="application/json")
