"""`GET /healthz` and `GET /metrics`.

Health says whether the gateway can serve: 200 `ok` when ClickHouse and every probed
upstream answer, 200 `degraded` when rows wait in the journal, some upstream is down, a
serving student fails (`students`: each called candidate's health) or a model's key
variable is not set (`missing_api_keys`), 503
when no upstream answers or the gateway refuses traffic because it cannot record it.
Probes are cached for a few seconds so a busy balancer costs nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from contracts.model_config import missing_key_variables
from gateway.state import GatewayState

_CACHE_S = 3.0


async def _probe(state: GatewayState) -> dict[str, Any]:
    models = state.router.policies.models
    names = list(models)
    results = await asyncio.gather(
        asyncio.to_thread(state.store.ping),
        *(state.upstreams.reachable(models[n]) for n in names),
    )
    clickhouse_ok = bool(results[0])
    upstreams = dict(zip(names, results[1:], strict=True))
    probed = [v for v in upstreams.values() if v is not None]
    writer = state.writer
    pending = writer.backlog_rows()
    redis = state.redis
    if redis is not None:
        try:
            await redis.client.ping()
            redis.ok, redis.error = True, ""
        except Exception as e:  # any failure: down, and said so
            redis.ok, redis.error = False, f"{type(e).__name__}: {e}"
    missing = missing_key_variables(models)
    if writer.refusing or (probed and not any(probed)):
        status = "down"
    elif (
        not clickhouse_ok
        or pending
        or not all(probed)
        or (redis is not None and not redis.ok)
        or state.students.unhealthy()
        or missing
    ):
        status = "degraded"
    else:
        status = "ok"
    return {
        "status": status,
        "clickhouse": {
            "ok": clickhouse_ok,
            "backend": "embedded" if state.store.embedded else "server",
            "rows_pending": pending,
        },
        "journal": {
            "enabled": writer.journal is not None,
            "writable": not writer.refusing and not writer.journal_error,
            "error": writer.journal_error,
            "refusing_traffic": writer.refusing,
        },
        "upstreams": upstreams,
        "students": state.students.report(),
        # A key variable that is not set: its models answer 502 upstream_auth_failed.
        "missing_api_keys": missing,
        "redis": None if redis is None else {"ok": redis.ok, "error": redis.error},
        "worker": state.worker,
    }


async def healthz(request: Request) -> Response:
    state: GatewayState = request.app.state.gw
    cached = state.health_cache
    now = time.monotonic()
    if not cached or now - float(cached["at"]) > _CACHE_S or state.writer.refusing:  # type: ignore[arg-type]
        cached.update(body=await _probe(state), at=now)
    body: dict[str, Any] = cached["body"]  # type: ignore[assignment]
    return Response(
        orjson.dumps(body),
        status_code=503 if body["status"] == "down" else 200,
        media_type="application/json",
    )


async def metrics(request: Request) -> Response:
    state: GatewayState = request.app.state.gw
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
