"""Admin API for the distiller's training: start a pass for a route now, and see runs.

`POST /admin/api/distill {"route": R, "force": true}` records a request in
`distill_requests`; whichever distiller runs (embedded in this gateway, or `flywheel
distill` elsewhere) trains the route on its next pass, new traffic or not. The gateway never
trains itself: it and the distiller meet in ClickHouse.
`GET /admin/api/runs[?route=R]` lists runs with their state and progress.

Invariant: admin keys only; an unknown route is a 404 in the API's error shape.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from contracts.errors import ApiError
from gateway.admin import admin_principal
from gateway.bodies import read_json, validate
from gateway.dashboard.api import json_response
from store.runs import latest_runs


class DistillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: str
    force: bool = True


async def post_distill(request: Request) -> Response:
    state, who = admin_principal(request)
    body = validate(DistillRequest, await read_json(request, 16 * 1024))
    assert isinstance(body, DistillRequest)
    routes = {r.name: r for r in state.router.policies.routes}
    route = routes.get(body.route)
    if route is None:
        raise ApiError(404, f"No route named {body.route!r}.", code="not_found", param="route")
    if not route.candidates:
        raise ApiError(
            400,
            f"Route {body.route!r} has no candidates to train.",
            code="invalid_request",
            param="route",
        )
    at = datetime.now(UTC)
    await asyncio.to_thread(
        state.store.insert_rows,
        "distill_requests",
        [[body.route, at, who, body.force]],
        ["route", "requested_at", "requested_by", "force"],
    )
    note = "the distiller trains it on its next pass"
    return json_response({"route": body.route, "requested_at": at.isoformat(), "note": note}, 202)


async def get_runs(request: Request) -> Response:
    state, _ = admin_principal(request)
    route = request.query_params.get("route", "")
    runs = await asyncio.to_thread(latest_runs, state.store, route)
    return json_response({"runs": runs})
