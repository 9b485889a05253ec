"""`POST /v1/messages/count_tokens`: how many input tokens a Messages request would use.

Coding agents (Claude Code) ask before each turn to budget their context. The gateway
answers from the request alone, at the ~4 characters a token it estimates costs with, after
reading the request exactly as `POST /v1/messages` would (the same checks, the same 400s
naming the field), so a request it counts is one it would accept.

Invariant: nothing is sent upstream and nothing is logged: a count is not a request.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from contracts import anthropic_shapes
from contracts.errors import ApiError
from gateway.auth import require_role
from gateway.bodies import read_json
from gateway.state import GatewayState

CHARS_PER_TOKEN = 4


def estimate(chat: dict[str, object]) -> int:
    """Tokens of what the model reads: the messages' text and the tools' schemas."""
    messages = chat.get("messages") or []
    chars = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif content is not None:
            chars += len(orjson.dumps(content))
        if isinstance(message, dict) and message.get("tool_calls"):
            chars += len(orjson.dumps(message["tool_calls"]))
        chars += 4 * CHARS_PER_TOKEN  # a turn's own framing
    if chat.get("tools"):
        chars += len(orjson.dumps(chat["tools"]))
    return max(1, -(-chars // CHARS_PER_TOKEN))


async def count_tokens(request: Request) -> Response:
    state: GatewayState = request.app.state.gw
    try:
        principal = state.keys.authenticate(request.headers)
        require_role(principal, *state.config.server.model_api_roles)
        server = state.config.server
        body = await read_json(request, server.max_body_bytes, server.body_timeout_s)
        if not isinstance(body.get("model"), str):
            raise ApiError(400, "Missing or invalid required parameter: 'model'.", param="model")
        # max_tokens is not part of a count request; the translation needs one.
        chat = anthropic_shapes.to_chat({**body, "max_tokens": 1, "stream": False})
    except ApiError as e:
        error = anthropic_shapes.error_body(e.status, e.message)
        return Response(orjson.dumps(error), e.status, media_type="application/json")
    return Response(orjson.dumps({"input_tokens": estimate(chat)}), media_type="application/json")
