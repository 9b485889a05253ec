"""`GET /openapi.json`: the public endpoints as an OpenAPI 3.1 document.

Request bodies come from the same pydantic models that validate them (`gateway/bodies.py`),
so the document cannot drift from what the gateway accepts. Answers are described by their
envelope (the upstream is the authority on an answer's fields).

Invariant: every path listed here is routed by `gateway/app.py` and answers without a
5xx for the bodies its schema allows (tests/test_openapi.py fuzzes it with schemathesis).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from gateway.bodies import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    FeedbackRequest,
    MessagesRequest,
    ResponsesRequest,
)

_REF = "#/components/schemas/{model}"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
_OBJECT = {"type": "object"}
_ERROR_CODES = ("400", "401", "403", "404", "408", "413", "429", "502", "503", "504")

# path -> (summary, body model, answer's content types, error schema)
_POSTS: dict[str, tuple[str, type[BaseModel], tuple[str, ...], str]] = {
    "/v1/chat/completions": (
        "Chat completion (OpenAI)",
        ChatRequest,
        ("application/json", "text/event-stream"),
        "Error",
    ),
    "/v1/completions": (
        "Text completion (OpenAI)",
        CompletionRequest,
        ("application/json", "text/event-stream"),
        "Error",
    ),
    "/v1/embeddings": ("Embeddings (OpenAI)", EmbeddingRequest, ("application/json",), "Error"),
    "/v1/responses": (
        "Responses API (OpenAI)",
        ResponsesRequest,
        ("application/json", "text/event-stream"),
        "Error",
    ),
    "/v1/messages": (
        "Messages API (Anthropic)",
        MessagesRequest,
        ("application/json", "text/event-stream"),
        "AnthropicError",
    ),
    "/v1/feedback": (
        "Feedback on a logged request",
        FeedbackRequest,
        ("application/json",),
        "Error",
    ),
}


def _errors(schema: str) -> dict[str, Any]:
    ref = {"$ref": _REF.format(model=schema)}
    return {
        code: {"description": "error", "content": {"application/json": {"schema": ref}}}
        for code in _ERROR_CODES
    }


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR, "AnthropicError": _ANTHROPIC_ERROR}
    paths: dict[str, Any] = {}
    for path, (summary, model, types, error) in _POSTS.items():
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        ok = {t: {"schema": _OBJECT} for t in types}
        paths[path] = {
            "post": {
                "summary": summary,
                "operationId": path.strip("/").replace("/", "_"),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}
                    },
                },
                "responses": {
                    "200": {"description": "the answer", "content": ok},
                    **_errors(error),
                },
            }
        }
    listing = {
        "200": {
            "description": "models this key may call",
            "content": {"application/json": {"schema": _OBJECT}},
        }
    }
    paths["/v1/models"] = {
        "get": {
            "summary": "Models this key may call",
            "operationId": "list_models",
            "responses": {**listing, **_errors("Error")},
        }
    }
    paths["/v1/models/{model}"] = {
        "get": {
            "summary": "One model this key may call",
            "operationId": "retrieve_model",
            "parameters": [
                {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {**listing, **_errors("Error")},
        }
    }
    health = {"description": "health", "content": {"application/json": {"schema": _OBJECT}}}
    paths["/healthz"] = {
        "get": {
            "summary": "Health",
            "operationId": "healthz",
            "security": [],
            "responses": {"200": health, "503": health},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Flywheel gateway", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"x-api-key": []}],
        "paths": paths,
    }


async def openapi_json(request: Request) -> Response:
    body: bytes = request.app.state.openapi
    return Response(body, media_type="application/json")


def render() -> bytes:
    return orjson.dumps(document())
