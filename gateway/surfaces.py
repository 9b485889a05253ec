"""API surfaces: the shapes a client speaks, around the one chat request path.

Chat completions, completions and embeddings are the path's own shapes. The Responses API
and Anthropic's Messages API are translated at the edge: the body into a chat request
before routing (so routing, guardrails, logging, pricing and distillation see one form), the
finished response (answer, refusal, error or stream) back into the client's shape.

Invariant: a surface touches only the request body on the way in and the `Response` on the
way out; nothing between them knows which API the client used except the row's `api`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

import orjson
from starlette.responses import Response, StreamingResponse

from contracts import (
    anthropic_fields,
    anthropic_native,
    anthropic_shapes,
    responses_events,
    responses_native,
    responses_shapes,
)
from contracts.errors import ApiError
from contracts.model_config import ModelConfig
from gateway.auth import Principal
from gateway.bodies import MessagesRequest, ResponsesRequest, validate
from gateway.request_log import Endpoint
from gateway.streaming import ChatReader
from store import Store, StoreUnavailable

Api = Literal["chat.completions", "completions", "embeddings", "responses", "messages"]

_CONVERSATIONS = 10_000  # recent Responses conversations kept for previous_response_id
_NOT_FORWARDED = ("tags", "flywheel_metadata", "flywheel_tags")  # the gateway's own fields


class Conversations:
    """Recent Responses conversations by request id, so `previous_response_id` works at
    once (ClickHouse has the row a moment later; older ones are read from there)."""

    def __init__(self) -> None:
        self._recent: OrderedDict[str, tuple[str, list[dict[str, Any]]]] = OrderedDict()

    def put(self, request_id: str, app: str, messages: list[dict[str, Any]]) -> None:
        self._recent[request_id] = (app, messages)
        if len(self._recent) > _CONVERSATIONS:
            self._recent.popitem(last=False)

    async def get(self, store: Store, request_id: str, app: str) -> list[dict[str, Any]] | None:
        known = self._recent.get(request_id)
        if known is not None:
            return known[1] if known[0] == app else None
        try:
            rows = await asyncio.to_thread(
                store.query_rows,
                "SELECT messages, response FROM requests WHERE request_id = {id:UUID}"
                " AND app = {app:String} AND kind = 'request' AND status = 'ok' LIMIT 1",
                {"id": request_id, "app": app},
            )
        except StoreUnavailable as e:
            raise ApiError(
                503, "ClickHouse is unavailable; retry shortly.", code="store_unavailable"
            ) from e
        if not rows:
            return None
        messages = orjson.loads(rows[0][0] or "[]")
        choices = (orjson.loads(rows[0][1] or "{}") or {}).get("choices") or [{}]
        return [*messages, choices[0].get("message") or {"role": "assistant", "content": ""}]


class Surface(Protocol):
    api: Api  # what the client speaks
    endpoint: Endpoint  # what the request path runs

    async def to_chat(self, body: dict[str, Any], principal: Principal) -> dict[str, Any]: ...

    def respond(self, response: Response, request_id: str) -> Response: ...


class Native:
    """The path's own shapes: nothing to translate."""

    def __init__(self, api: Api, endpoint: Endpoint) -> None:
        self.api, self.endpoint = api, endpoint

    async def to_chat(self, body: dict[str, Any], principal: Principal) -> dict[str, Any]:
        return body

    def respond(self, response: Response, request_id: str) -> Response:
        return response


def _json_body(response: Response) -> Any:
    try:
        return orjson.loads(bytes(response.body))
    except orjson.JSONDecodeError:
        return None


def _rebuilt(response: Response, body: Any) -> Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(
        orjson.dumps(body),
        status_code=response.status_code,
        headers=headers,
        media_type="application/json",
    )


class Translated:
    """Common to the translated surfaces: chat answer / stream / error back to the client,
    or, passed through to an upstream that speaks the client's API itself, the upstream's
    own answer and events untouched (the request path still gets the chat form)."""

    api: Api
    endpoint: Endpoint = "chat.completions"
    native_endpoint: str = ""  # the upstream endpoint a pass-through calls

    def __init__(self, store: Store, conversations: Conversations) -> None:
        self.store = store
        self.conversations = conversations
        self.body: dict[str, Any] = {}
        self.chat: dict[str, Any] = {}
        self.app = ""
        self.native_answer: dict[str, Any] | None = None
        self.native_events: list[bytes] | None = None  # raw upstream events to pass on
        # Read when the request is translated (an upstream that speaks the client's API
        # gets it as sent): what the chat form cannot carry (a 400) and what it leaves out,
        # saying so (`x-flywheel-not-carried`).
        self.untranslatable: ApiError | None = None
        self.not_carried: list[str] = []

    def native_body(self, model: ModelConfig, may_pass_through: bool) -> dict[str, Any] | None:
        """The body for `model`'s own endpoint, or None to translate."""
        return None

    def provider_only(self) -> str:
        """Why only an upstream speaking the client's API can serve this request (a tool
        the provider runs itself), or ''. A student, which speaks chat, never serves it."""
        why = self.untranslatable
        return "" if why is None else f"{why.param}: {why.message}"

    def translating(self) -> None:
        """The request goes to a chat upstream: raise what it cannot carry."""
        if self.untranslatable is not None:
            raise self.untranslatable

    def _chat_of_native(self, answer: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def native_reader(self) -> ChatReader:
        raise NotImplementedError

    def _forwarded(self, model: ModelConfig) -> dict[str, Any]:
        body = {k: v for k, v in self.body.items() if k not in _NOT_FORWARDED}
        body["model"] = model.upstream_name
        return body

    def took_native(self, raw: bytes) -> bytes:
        """The upstream's own answer, kept for the client; the chat form for the path."""
        self.native_answer = orjson.loads(raw)
        return orjson.dumps(self._chat_of_native(self.native_answer or {}))

    def _answer(self, answer: dict[str, Any], request_id: str) -> Any:
        raise NotImplementedError

    def _translator(self, request_id: str) -> Any:
        raise NotImplementedError

    def _error(self, status: int, body: Any) -> Any:
        return body

    def respond(self, response: Response, request_id: str) -> Response:
        if self.native_answer is not None and response.status_code == 200:
            if not isinstance(response, StreamingResponse):
                return _rebuilt(response, self.native_answer)
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._stream(response.body_iterator, request_id)  # type: ignore[arg-type]
            return response
        body = _json_body(response)
        if body is None:
            return response
        if response.status_code >= 400:
            return _rebuilt(response, self._error(response.status_code, body))
        self._remember(request_id, body)
        return _rebuilt(response, self._answer(body, request_id))

    def _remember(self, request_id: str, answer: dict[str, Any]) -> None:
        message = ((answer.get("choices") or [{}])[0]).get("message")
        if message:
            self.conversations.put(request_id, self.app, [*self.chat.get("messages", []), message])

    async def _stream(self, events: AsyncIterator[Any], request_id: str) -> AsyncIterator[bytes]:
        if self.native_events is not None:
            # Passed through: each chat event the path relays stands for upstream events
            # the client gets as they were.
            raw = self.native_events
            async for _ in events:
                while raw:
                    yield raw.pop(0)
            while raw:
                yield raw.pop(0)
            return
        tr = self._translator(request_id)
        for out in tr.start():
            yield out
        async for raw in events:
            event = raw if isinstance(raw, bytes) else str(raw).encode()
            payload = event.removeprefix(b"data: ").strip()
            if payload == b"[DONE]":
                for out in tr.finish_events():
                    yield out
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if "error" in chunk:
                for out in tr.error(chunk["error"] or {}):
                    yield out
                continue
            for out in tr.chunk(chunk):
                yield out


class Responses(Translated):
    """Translated to chat for most upstreams; passed through to one that serves the
    Responses API itself (`responses_api: true`), the client then getting its object and
    events untouched while the row keeps the chat form."""

    api: Api = "responses"

    def __init__(self, store: Store, conversations: Conversations) -> None:
        super().__init__(store, conversations)
        self.remote_previous = ""  # a previous_response_id this gateway did not issue
        self.local_previous = False

    async def to_chat(self, body: dict[str, Any], principal: Principal) -> dict[str, Any]:
        validate(ResponsesRequest, body)
        self.body, self.app = body, principal.app
        history = None
        previous = body.get("previous_response_id")
        if previous is not None:
            rid = responses_shapes.request_id_of(str(previous))
            history = await self.conversations.get(self.store, rid, principal.app) if rid else None
            # Not one of ours: only an upstream that serves the Responses API may know it.
            self.remote_previous = "" if history is not None else str(previous)
            self.local_previous = history is not None
        # A hosted tool (web_search, ...) or a parameter chat has no word for blocks only a
        # translated request: an upstream that serves the Responses API takes it as sent.
        self.untranslatable = responses_shapes.untranslatable(body)
        self.not_carried = responses_shapes.not_carried(body)
        self.chat = responses_shapes.to_chat(body, history, lenient=True)
        return self.chat

    native_endpoint = "responses"

    def native_body(self, model: ModelConfig, may_pass_through: bool) -> dict[str, Any] | None:
        """The body to send to `model`'s own /responses, or None to translate."""
        if model.responses_api and model.openai_compatible and may_pass_through:
            if not self.local_previous:
                return self._forwarded(model)
        if self.remote_previous:
            raise ApiError(
                400,
                f"Previous response with id '{self.remote_previous}' not found.",
                code="previous_response_not_found",
                param="previous_response_id",
            )
        self.translating()
        return None

    def _chat_of_native(self, answer: dict[str, Any]) -> dict[str, Any]:
        return responses_native.chat_answer(answer)

    def native_reader(self) -> ChatReader:
        return responses_native.ChatChunks()

    def _answer(self, answer: dict[str, Any], request_id: str) -> Any:
        return responses_shapes.from_chat(answer, self.body, request_id)

    def _translator(self, request_id: str) -> Any:
        return _Remembering(
            self, responses_events.StreamTranslator(self.body, request_id), request_id
        )


class _Remembering:
    """A Responses stream translator that keeps the finished conversation."""

    def __init__(
        self, surface: Responses, inner: responses_events.StreamTranslator, request_id: str
    ) -> None:
        self.surface, self.inner, self.request_id = surface, inner, request_id
        self.start, self.chunk, self.error = inner.start, inner.chunk, inner.error

    def finish_events(self) -> list[bytes]:
        message: dict[str, Any] = {"role": "assistant", "content": self.inner.text or None}
        if self.inner.calls:
            message["tool_calls"] = [
                {
                    "id": c["call_id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in self.inner.calls.values()
            ]
        self.surface._remember(self.request_id, {"choices": [{"message": message}]})
        return self.inner.finish_events()


class Messages(Translated):
    api: Api = "messages"

    async def to_chat(self, body: dict[str, Any], principal: Principal) -> dict[str, Any]:
        validate(MessagesRequest, body)
        self.body, self.app = body, principal.app
        self.untranslatable = anthropic_fields.untranslatable(body)
        self.not_carried = anthropic_fields.not_carried(body)
        self.chat = anthropic_shapes.to_chat(body)
        return self.chat

    native_endpoint = "messages"

    def native_body(self, model: ModelConfig, may_pass_through: bool) -> dict[str, Any] | None:
        """An Anthropic upstream gets the client's own body (cache_control, thinking and
        every other Anthropic field kept)."""
        if model.provider == "anthropic" and may_pass_through:
            return self._forwarded(model)
        self.translating()
        return None

    def _chat_of_native(self, answer: dict[str, Any]) -> dict[str, Any]:
        return anthropic_native.chat_answer(answer)

    def native_reader(self) -> ChatReader:
        return anthropic_native.ChatChunks()

    def _answer(self, answer: dict[str, Any], request_id: str) -> Any:
        return anthropic_shapes.from_chat(answer, self.body.get("model"), request_id)

    def _translator(self, request_id: str) -> Any:
        return anthropic_shapes.StreamTranslator(self.body.get("model"), request_id)

    def _error(self, status: int, body: Any) -> Any:
        err = body.get("error") if isinstance(body, dict) else None
        message = err.get("message") if isinstance(err, dict) else str(body)
        return anthropic_shapes.error_body(status, str(message))
