"""The Starlette application: routes, error handlers, and the lifespan that owns resources.

Invariant: on shutdown (SIGTERM included, via uvicorn) the log writer makes one last pass
into ClickHouse before the store closes; whatever ClickHouse does not take stays in the
journal for the next start.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts import anthropic_shapes
from contracts.errors import ApiError
from gateway import admin, models_api, openai_api, openapi, query_admin, training_admin
from gateway.auth import KeyRing
from gateway.budgets import BudgetBook
from gateway.cache import ResponseCache
from gateway.config import GatewayConfig
from gateway.count_tokens import count_tokens
from gateway.dashboard import api as dashboard_api
from gateway.dashboard.pages import dashboard_routes
from gateway.dashboard.revocations import RedisRevocations, StoreRevocations
from gateway.dashboard.session import Sessions, load_secret
from gateway.feedback import post_feedback
from gateway.health import healthz, metrics
from gateway.journal import Journal
from gateway.log_writer import LogWriter
from gateway.metrics import GatewayMetrics
from gateway.policy_reload import PolicyReloader, build_router
from gateway.rate_limit import RateLimiter
from gateway.redis_link import RedisLink
from gateway.session_routing import SessionPins
from gateway.state import GatewayState
from gateway.student_health import StudentHealth
from gateway.upstream import Upstreams
from store import Store, StoreUnavailable, server_store

log = logging.getLogger("flywheel.gateway")


class Companion(Protocol):
    """Something that runs beside the gateway for its lifetime (the composition root adds
    the student server and the distiller); the gateway never imports what it starts."""

    def start(self, state: GatewayState) -> None: ...

    def stop(self) -> None: ...


def build_state(
    config: GatewayConfig,
    store: Store | None = None,
    journal_dir: Path | None = None,
    worker: int | None = None,
) -> GatewayState:
    """Everything the app needs, built once; raises ConfigError (PolicyError) for a config
    or policy that cannot be served."""
    router = build_router(config)
    keys = KeyRing(config)
    metrics_ = GatewayMetrics()
    store = store or server_store(config.clickhouse_dsn, config.clickhouse.timeout_s)
    link = (
        RedisLink(config.redis.url, config.redis.timeout_s, config.redis.max_connections)
        if config.redis is not None and config.redis.url
        else None
    )
    journal = (
        Journal(journal_dir or config.journal_dir, config.log.journal_segment_bytes)
        if config.log.journal
        else None
    )
    metrics_.redis_up.set_function(lambda: 1 if link is None or link.ok else 0)
    return GatewayState(
        config=config,
        keys=keys,
        router=router,
        metrics=metrics_,
        store=store,
        writer=LogWriter(store, journal, router.prices, config.log, metrics_),
        upstreams=Upstreams(config.server.upstream_connections),
        students=StudentHealth(metrics_.student_healthy, metrics_.student_errors),
        sessions=Sessions(
            keys,
            load_secret(config.server.session_secret, config.data_dir),
            RedisRevocations(link) if link is not None else StoreRevocations(store),
        ),
        limiter=RateLimiter(link),
        budgets=BudgetBook(config.budgets + router.policies.budgets, link),
        cache=ResponseCache(link),
        redis=link,
        worker=worker,
        session_pins=SessionPins(config.router.session_pins, config.router.session_ttl_s),
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405 with its `Allow`) in the shape of the API the path is."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if request.url.path.startswith("/v1/messages"):
        body = anthropic_shapes.error_body(exc.status_code, str(exc.detail))
        return Response(orjson.dumps(body), exc.status_code, headers, media_type="application/json")
    return ApiError(exc.status_code, str(exc.detail), code="http_error").response(headers)


async def _store_down(request: Request, exc: Exception) -> Response:
    # Only reads reach here (the dashboard's); writes wait in the journal instead. The
    # database's own text stays in the log: it can name tables, settings and hosts.
    log.warning("store unavailable on %s: %s", request.url.path, exc)
    return ApiError(
        503, "ClickHouse is unavailable; try again shortly.", code="store_unavailable"
    ).response()


class _AnswerErrors:
    """Catches what escaped every handler and answers an OpenAI-shaped 500 itself.

    Starlette's outermost ServerErrorMiddleware re-raises after answering, and uvicorn then
    drops the keep-alive connection (seen: the client's next request on it was reset).
    Sitting inside it, this answers and swallows, so the connection lives on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s", scope.get("path"))
            if started:
                raise  # half a response is out: only closing the connection is honest
            err = ApiError(500, "The gateway hit an internal error.", code="internal_error")
            await err.response()(scope, receive, send)


def build_app(state: GatewayState, companions: Sequence[Companion] = ()) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await asyncio.to_thread(state.store.ensure_schema)
        except StoreUnavailable as e:
            log.warning("ClickHouse unavailable at start, rows wait in the journal: %s", e)
        await state.upstreams.start(state.router.policies.models)
        try:
            await state.budgets.seed(state.store)
        except StoreUnavailable as e:
            log.warning("budgets not seeded from ClickHouse (unavailable): %s", e)
        state.writer.start()
        reloader = PolicyReloader(state)
        reloader.mark_loaded(state.router)
        await reloader.refresh_states()
        watcher = asyncio.create_task(reloader.run())
        started: list[Companion] = []
        for companion in companions:
            companion.start(state)
            started.append(companion)
        # Long-lived start-up objects leave the collector's view, and young collections run
        # less often: full collections over them showed as multi-ms latency tails.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        try:
            yield
        finally:
            watcher.cancel()
            for companion in reversed(started):
                companion.stop()
            if state.background:
                await asyncio.wait(state.background, timeout=10)
            await asyncio.to_thread(state.writer.close)
            await state.upstreams.close()
            if state.redis is not None:
                await state.redis.close()
            if state.router.nemo is not None:
                await state.router.nemo.stop()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
            Route("/v1/completions", openai_api.completions, methods=["POST"]),
            Route("/v1/embeddings", openai_api.embeddings, methods=["POST"]),
            Route("/v1/responses", openai_api.responses, methods=["POST"]),
            Route("/v1/messages", openai_api.messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route("/v1/models", models_api.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", models_api.retrieve_model, methods=["GET"]),
            Route("/v1/feedback", post_feedback, methods=["POST"]),
            Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/admin/policies", admin.get_policies, methods=["GET"]),
            Route("/admin/route/explain", admin.explain_route, methods=["POST"]),
            Route("/admin/api/distill", training_admin.post_distill, methods=["POST"]),
            Route("/admin/api/runs", training_admin.get_runs, methods=["GET"]),
            Route("/admin/api/query", query_admin.post_query, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/admin/api/me", dashboard_api.get_me, methods=["GET"]),
            Route("/admin/api/finance", dashboard_api.get_finance, methods=["GET"]),
            Route("/admin/api/budgets", dashboard_api.get_budgets, methods=["GET"]),
            Route("/admin/api/routes", dashboard_api.get_routes, methods=["GET"]),
            Route("/admin/api/candidates", dashboard_api.get_candidates, methods=["GET"]),
            Route("/admin/api/history", dashboard_api.get_history, methods=["GET"]),
            Route("/admin/api/guardrails", dashboard_api.get_guardrails, methods=["GET"]),
            Route("/admin/api/lineage", dashboard_api.get_lineage, methods=["GET"]),
            Route("/admin/api/review", dashboard_api.get_review, methods=["GET"]),
            Route("/admin/api/review/labels", dashboard_api.post_label, methods=["POST"]),
            *dashboard_routes(),
        ],
        middleware=_middleware(state.config),
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            StoreUnavailable: _store_down,
        },
        lifespan=lifespan,
    )
    app.state.gw = state
    app.state.openapi = openapi.render()
    return app


def _middleware(config: GatewayConfig) -> list[Middleware]:
    out = [Middleware(_AnswerErrors)]
    cors = config.server.cors
    if cors.allow_origins:
        # Browser apps on other origins: off unless origins are listed (preflights answered
        # before auth, as browsers send them without credentials).
        out.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=cors.allow_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=cors.allow_headers,
                expose_headers=cors.expose_headers,
                allow_credentials=False,
                max_age=cors.max_age_s,
            ),
        )
    return out
