"""Request bodies: read within the size limit, parse, check the types the gateway relies on.

Unknown fields pass through untouched (sampling parameters, tools, response_format, ...):
the upstream is the authority on those. Malformed JSON is a 400, and so (as OpenAI answers
it) is a body that parses but has wrong types or misses required fields, naming the field in
`param`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError
from starlette.requests import Request

from contracts.errors import ApiError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Open):
    include_usage: StrictBool = False


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatRequest(_Open):
    model: StrictStr
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    # Sampling parameters are checked at the edge, as OpenAI checks them: a wrong type is a
    # 400 naming the field here, not an upstream's error (or worse, its silence) later.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    # Output checks read it before the answer is sent: it must be an object.
    response_format: dict[str, Any] | None = None
    metadata: dict[str, StrictStr] | None = None
    tags: list[StrictStr] | None = None
    flywheel_metadata: dict[str, StrictStr] | None = None
    flywheel_tags: list[StrictStr] | None = None


class CompletionRequest(_Open):
    model: StrictStr
    prompt: StrictStr | list[StrictStr] | list[int] | list[list[int]]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    metadata: dict[str, StrictStr] | None = None
    tags: list[StrictStr] | None = None
    flywheel_metadata: dict[str, StrictStr] | None = None
    flywheel_tags: list[StrictStr] | None = None


class EmbeddingRequest(_Open):
    model: StrictStr
    input: StrictStr | list[StrictStr] | list[int] | list[list[int]]
    metadata: dict[str, StrictStr] | None = None
    tags: list[StrictStr] | None = None
    flywheel_metadata: dict[str, StrictStr] | None = None
    flywheel_tags: list[StrictStr] | None = None


class ResponsesRequest(_Open):
    """OpenAI's Responses API (translated to a chat request, see contracts/responses_shapes)."""

    model: StrictStr
    input: StrictStr | list[dict[str, Any]]
    instructions: StrictStr | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    stream: StrictBool = False
    previous_response_id: StrictStr | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    metadata: dict[str, StrictStr] | None = None
    flywheel_metadata: dict[str, StrictStr] | None = None
    flywheel_tags: list[StrictStr] | None = None


class MessagesRequest(_Open):
    """Anthropic's Messages API (translated to a chat request, see contracts/anthropic_shapes)."""

    model: StrictStr
    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: StrictStr | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    stream: StrictBool = False
    stop_sequences: list[StrictStr] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    metadata: dict[str, Any] | None = None
    flywheel_metadata: dict[str, StrictStr] | None = None
    flywheel_tags: list[StrictStr] | None = None


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: StrictStr
    score: float | StrictBool
    tag: StrictStr = ""
    comment: StrictStr = ""


SCHEMAS: dict[str, type[BaseModel]] = {
    "chat.completions": ChatRequest,
    "completions": CompletionRequest,
    "embeddings": EmbeddingRequest,
}


async def read_json(request: Request, limit: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """The body as a JSON object: at most `limit` bytes (refused before reading when the
    length says so), arriving within `timeout_s` (a client that trickles it is a 408)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    raw = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > limit:
                    raise _too_large(limit)
    except TimeoutError as e:
        raise ApiError(
            408, f"The request body did not arrive within {timeout_s:g} s.", code="request_timeout"
        ) from e
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(
            400,
            f"We could not parse the JSON body of your request ({e.msg}). "
            "Send a JSON object with Content-Type: application/json.",
            code="invalid_json",
        ) from e
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    if _depth(data) > MAX_DEPTH:
        raise ApiError(
            400,
            f"The JSON body is nested more than {MAX_DEPTH} levels deep; no API field needs that.",
            code="invalid_json",
        )
    return data


# Deeper bodies cannot be re-serialised for the log (orjson stops at 255 levels) and no API
# shape comes near it: refuse them at the edge with a clear 400.
MAX_DEPTH = 64


def _depth(value: Any) -> int:
    """The nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def validate(schema: type[BaseModel], body: dict[str, Any]) -> BaseModel:
    try:
        return schema.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        missing = first["type"] == "missing"
        message = (
            f"Missing required parameter: '{param}'."
            if missing
            else f"Invalid value for '{param}': {first['msg']}."
        )
        # OpenAI answers 400 for an invalid parameter (its SDKs raise BadRequestError).
        raise ApiError(400, message, code="invalid_value", param=param) from e


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"Request body is larger than the gateway's limit of {limit} bytes.", code="too_large"
    )
