"""`/admin/api/*`: the dashboard's figures as JSON, and any of its tables as CSV.

Roles: finance figures for `finance` and `admin` keys; routes, candidates, history,
lineage and guardrail rates for `admin`; the review queue for `reviewer` and `admin`. App
keys get 403.
Each GET answers JSON, or CSV with `?format=csv&table=NAME` (one of the tables it returns).

Invariant: money leaves as decimal strings (`"0.001250000"`), never floats; ClickHouse work
runs off the event loop.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from contracts.errors import ApiError
from gateway.auth import Principal
from gateway.bodies import read_json, validate
from gateway.dashboard import finance, guardrails, lifecycle, review
from gateway.dashboard.filters import Filters
from gateway.state import GatewayState

FINANCE_ROLES = ("admin", "finance")
ADMIN_ROLES = ("admin",)
REVIEW_ROLES = ("admin", "reviewer")


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return format(o, "f")
    raise TypeError(f"cannot serialise {type(o).__name__}")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, default=_default, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
    )


def _cell(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, dict | list):
        return orjson.dumps(v, default=_default).decode()
    return "" if v is None else v


def csv_response(rows: list[dict[str, Any]], name: str) -> Response:
    out = io.StringIO()
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(v) for k, v in r.items()})
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


def _respond(request: Request, body: dict[str, Any], name: str) -> Response:
    if request.query_params.get("format") != "csv":
        return json_response(body)
    tables = sorted(k for k, v in body.items() if isinstance(v, list))
    table = request.query_params.get("table", "")
    if table not in tables:
        raise ApiError(
            400,
            f"`table` must be one of: {', '.join(tables)}.",
            code="invalid_table",
            param="table",
        )
    return csv_response(body[table], f"{name}-{table}")


async def _auth(request: Request, *roles: str) -> tuple[GatewayState, Principal]:
    state: GatewayState = request.app.state.gw
    return state, await state.sessions.principal(request, *roles)


async def _run(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def get_budgets(request: Request) -> Response:
    """Each budget next to its spend: used, held for requests in flight, remaining, when
    it resets and when it runs out at this period's rate."""
    state, _ = await _auth(request, *FINANCE_ROLES)
    return _respond(request, {"budgets": await state.budgets.status()}, "budgets")


async def get_finance(request: Request) -> Response:
    state, _ = await _auth(request, *FINANCE_ROLES)
    f = Filters.from_query(request.query_params)
    split = request.query_params.get("split", "app")
    if split not in finance.DIMENSIONS:
        raise ApiError(
            400,
            f"`split` must be one of: {', '.join(finance.DIMENSIONS)}.",
            code="invalid_filter",
            param="split",
        )
    f = f.model_copy(update={"few_shot_models": finance.few_shot_models(state.router.policies)})
    report = await _run(finance.finance_report, state.store, f, None, split)
    return _respond(request, report, "finance")


async def get_routes(request: Request) -> Response:
    state, _ = await _auth(request, *ADMIN_ROLES)
    return _respond(request, lifecycle.routes(state), "routes")


async def get_candidates(request: Request) -> Response:
    state, _ = await _auth(request, *ADMIN_ROLES)
    body = await _run(lifecycle.candidates, state.store)
    for row in body["candidates"]:  # this gateway's own calls to it: does it answer?
        row.update(state.students.view(row["route"], row["candidate"]))
    return _respond(request, body, "candidates")


async def get_history(request: Request) -> Response:
    state, _ = await _auth(request, *ADMIN_ROLES)
    f = Filters.from_query(request.query_params)
    route = request.query_params.get("route", "")
    return _respond(request, await _run(lifecycle.history, state.store, f, route), "history")


async def get_guardrails(request: Request) -> Response:
    """Block, flag and mask rates per route and rail over the date range and per bucket, the
    rules that fired, and the prompt-attack detector each route serves with."""
    state, _ = await _auth(request, *ADMIN_ROLES)
    f = Filters.from_query(request.query_params)
    body = await _run(guardrails.rates, state.store, f)
    body["detectors"] = guardrails.detectors(state)
    return _respond(request, body, "guardrails")


async def get_lineage(request: Request) -> Response:
    state, _ = await _auth(request, *ADMIN_ROLES)
    route = request.query_params.get("route", "")
    candidate = request.query_params.get("candidate", "")
    if not route or not candidate:
        raise ApiError(
            400, "Give `route` and `candidate` to trace.", code="missing_parameter", param="route"
        )
    limit = 1_000_000 if request.query_params.get("format") == "csv" else 200
    body = await _run(lifecycle.lineage, state.store, route, candidate, limit)
    return _respond(request, body, f"lineage-{route}-{candidate}")


async def get_review(request: Request) -> Response:
    state, _ = await _auth(request, *REVIEW_ROLES)
    f = Filters.from_query(request.query_params)
    queue, labels = await asyncio.gather(
        _run(review.review_queue, state.store, f),
        _run(review.recent_labels, state.store),
    )
    return _respond(request, {"queue": queue, "labels": labels}, "review")


def _same_origin_json(request: Request) -> None:
    """A state-changing call must be JSON (a cross-site form or `text/plain` post cannot be
    without a preflight, which this server never grants) and, when the browser names its
    origin, come from this one: SameSite cookies are not the only guard."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "Send the label as application/json.", code="unsupported_media_type")
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise ApiError(403, "Cross-origin requests may not change labels.", code="forbidden")


async def post_label(request: Request) -> Response:
    state, who = await _auth(request, *REVIEW_ROLES)
    _same_origin_json(request)
    body = validate(review.LabelRequest, await read_json(request, 256 * 1024))
    assert isinstance(body, review.LabelRequest)
    saved = await _run(review.save_label, state.store, body, who.key_id)
    return json_response(saved, status=201)


async def get_me(request: Request) -> Response:
    state, who = await _auth(request, *FINANCE_ROLES, *REVIEW_ROLES)
    apps = sorted(state.config.apps)
    teams = sorted({a.team for a in state.config.apps.values()})
    return json_response({"key_id": who.key_id, "role": who.role, "apps": apps, "teams": teams})
