"""Admin API: read-only SQL against the gateway's store (`flywheel query --url`).

`POST /admin/api/query {"sql": ..., "limit": 1000, "timeout_s": 30}` answers
`{"columns": [...], "rows": [[...]], "truncated": bool}`. The embedded store has one owner,
the gateway; this is how a user reads it live without stopping or copying it.

Invariant: admin keys only; SQL that is not one read-only statement is a 400 before it reaches
ClickHouse, and a query ClickHouse refuses (bad SQL, over its time) is a 400 with its reason.
"""

from __future__ import annotations

import asyncio
import re

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from contracts.errors import ApiError
from gateway.admin import admin_principal
from gateway.bodies import read_json, validate
from gateway.dashboard.api import json_response
from store import StoreUnavailable
from store.read_only import NotReadOnly, read_only_query

# ClickHouse's own refusal ("Code: 60. DB::Exception: ..."), as against a store that is down.
_CLICKHOUSE_ERROR = re.compile(r"\bCode: \d+\.")


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=64 * 1024)
    limit: int = Field(default=1000, ge=1, le=100_000)
    timeout_s: float = Field(default=30.0, gt=0, le=300)


async def post_query(request: Request) -> Response:
    state, _ = admin_principal(request)
    body = validate(QueryRequest, await read_json(request, 128 * 1024))
    assert isinstance(body, QueryRequest)
    try:
        result = await asyncio.to_thread(
            read_only_query, state.store, body.sql, body.limit, body.timeout_s
        )
    except NotReadOnly as e:
        raise ApiError(400, f"Refused: {e}.", code="not_read_only", param="sql") from e
    except StoreUnavailable as e:
        text = str(e)
        if not _CLICKHOUSE_ERROR.search(text):
            raise  # the store is down: the app's 503
        raise ApiError(400, f"ClickHouse refused the query: {text}", code="query_failed") from e
    return json_response(
        {"columns": result.columns, "rows": result.rows, "truncated": result.truncated}
    )
