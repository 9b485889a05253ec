"""`POST /v1/feedback`: a later judgement of one request, stored against its id.

Invariant: feedback lands only against a request this gateway logged, from a key of the app
that made it (a score below 0.5 removes the request from training, so no other key may give
one); unknown and foreign ids are both 404. A comment on a request from a masking route is
masked like the request's own row.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
from starlette.requests import Request
from starlette.responses import Response

from contracts.errors import ApiError
from gateway.auth import require_role
from gateway.bodies import FeedbackRequest, read_json, validate
from gateway.guardrails.engine import mask_strings
from gateway.request_log import utc_timestamp
from gateway.state import GatewayState
from store import StoreUnavailable


def _normalise_id(raw: str) -> str | None:
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        return None


async def post_feedback(request: Request) -> Response:
    state: GatewayState = request.app.state.gw
    principal = state.keys.authenticate(request.headers)
    require_role(principal, *state.config.server.model_api_roles)
    body = await read_json(request, 64 * 1024)
    fb = validate(FeedbackRequest, body)
    assert isinstance(fb, FeedbackRequest)
    request_id = _normalise_id(fb.request_id)
    not_found = ApiError(
        404, f"No request with id '{fb.request_id}'.", code="request_not_found", param="request_id"
    )
    if request_id is None:
        raise not_found
    known = state.writer.owner_of(request_id)
    if known is None:
        try:
            rows = await asyncio.to_thread(
                state.store.query_rows,
                "SELECT app, route FROM requests WHERE request_id = {id:UUID} LIMIT 1",
                {"id": request_id},
            )
        except StoreUnavailable as e:
            raise ApiError(
                503, "Feedback store is unavailable; retry shortly.", code="store_unavailable"
            ) from e
        if not rows:
            raise not_found
        known = (str(rows[0][0]), str(rows[0][1]))
    owner, route = known
    if owner != principal.app:
        raise not_found  # do not reveal other apps' request ids
    rails = state.router.rails.get(route)
    comment = fb.comment
    if rails is not None and rails.log_mask:
        # A comment is stored like the request it judges: masked on a masking route.
        comment = mask_strings(comment, rails.log_mask, rails.phone_regions)
    feedback_id = str(uuid.uuid4())
    score = float(fb.score) if not isinstance(fb.score, bool) else (1.0 if fb.score else 0.0)
    state.writer.submit_row(
        "feedback",
        {
            "feedback_id": feedback_id,
            "request_id": request_id,
            "created_at": utc_timestamp(time.time()),
            "app": principal.app,
            "key_id": principal.key_id,
            "score": score,
            "tag": fb.tag,
            "comment": comment,
        },
    )
    return Response(
        orjson.dumps({"id": feedback_id, "object": "feedback", "request_id": request_id}),
        media_type="application/json",
    )
