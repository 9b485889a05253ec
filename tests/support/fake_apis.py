"""The fake provider's other APIs: OpenAI's Responses API served natively, and
Anthropic's Messages API (tool use included), as mixins of `FakeUpstream`.

They answer from the same markers as the chat endpoint (`[[tool]]`, `[[status:N]]`, ...):
`native:` marks an answer the Responses API served itself, `echo:` Anthropic's.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from contracts.openai_shapes import last_user_text
from tests.support import fake_agent
from tests.support.fake_marks import MARK as _MARK
from tests.support.fake_marks import cached_tokens
from tests.support.fake_marks import words as _words


def _response(body: dict[str, Any], rid: str, item: dict[str, Any], out: int) -> dict[str, Any]:
    """A finished Responses object with one output item and `out` output tokens."""
    into = _words(body.get("input"))
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": body.get("model"),
        "output": [item],
        "usage": {
            "input_tokens": into,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": into + out,
        },
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": None,
        "top_p": None,
        "tool_choice": "auto",
        "tools": [],
        "previous_response_id": body.get("previous_response_id"),
        "text": {"format": {"type": "text"}},
        "reasoning": {"effort": None, "summary": None},  # an item chat has no word for
    }


class ResponsesApi:
    requests: list[dict[str, Any]]
    responses_by_id: dict[str, str]

    async def responses(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        self.requests.append(body)
        items = body.get("input")
        text = items if isinstance(items, str) else ""
        if isinstance(items, list):
            for item in items:
                content = item.get("content") if isinstance(item, dict) else None
                if isinstance(content, str):
                    text = content
                elif item.get("type") == "function_call_output":
                    text = f"tool said {item.get('output')}"
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.responses_by_id:
            err = {
                "error": {
                    "message": "Previous response not found.",
                    "type": "invalid_request_error",
                    "param": "previous_response_id",
                    "code": None,
                }
            }
            return web.json_response(err, status=400)
        rid = f"resp_native_{len(self.responses_by_id) + 1}"
        answer = f"native: {_MARK.sub('', text).strip()}"
        if previous is not None:
            answer += f" (after {previous})"
        if fake_agent.asks(fake_agent.input_texts(body)):
            step, said, args = fake_agent.responses_step(body)
            if step == "call":
                return await self._agent_call(request, body, rid, said, args)
            answer = said
        self.responses_by_id[rid] = answer
        words = answer.split(" ")
        message = {
            "type": "message",
            "id": "msg_native",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": answer, "annotations": []}],
        }
        final = _response(body, rid, message, len(words))
        if not body.get("stream"):
            return web.json_response(final, dumps=lambda o: orjson.dumps(o).decode())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        seq = 0

        async def emit(kind: str, **data: Any) -> None:
            nonlocal seq
            payload = orjson.dumps({"type": kind, "sequence_number": seq, **data})
            seq += 1
            await resp.write(f"event: {kind}\n".encode() + b"data: " + payload + b"\n\n")

        shell = {**final, "status": "in_progress", "output": [], "usage": None}
        await emit("response.created", response=shell)
        await emit(
            "response.output_item.added",
            output_index=0,
            item={**message, "status": "in_progress", "content": []},
        )
        part = {"type": "output_text", "text": "", "annotations": []}
        ids = {"item_id": "msg_native", "output_index": 0, "content_index": 0}
        await emit("response.content_part.added", part=part, **ids)
        for k, word in enumerate(words):
            await emit(
                "response.output_text.delta",
                delta=word if k == 0 else " " + word,
                logprobs=[],
                **ids,
            )
        await emit("response.output_text.done", text=answer, logprobs=[], **ids)
        await emit("response.content_part.done", part={**part, "text": answer}, **ids)
        await emit("response.output_item.done", output_index=0, item=message)
        await emit("response.completed", response=final)
        await resp.write_eof()
        return resp

    async def _agent_call(
        self, request: web.Request, body: dict[str, Any], rid: str, name: str, args: Any
    ) -> web.StreamResponse:
        """A function call, as the Responses API answers one (streamed when asked)."""
        self.responses_by_id[rid] = ""
        arguments = orjson.dumps(args).decode()
        call = {
            "type": "function_call",
            "id": "fc_agent_1",
            "call_id": "call_agent_1",
            "name": name,
            "arguments": arguments,
            "status": "completed",
        }
        final = _response(body, rid, call, 8)
        if not body.get("stream"):
            return web.json_response(final, dumps=lambda o: orjson.dumps(o).decode())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": {**final, "status": "in_progress", "output": []}}),
            (
                "response.output_item.added",
                {"output_index": 0, "item": {**call, "arguments": "", "status": "in_progress"}},
            ),
            (
                "response.function_call_arguments.delta",
                {"item_id": call["id"], "output_index": 0, "delta": arguments},
            ),
            (
                "response.function_call_arguments.done",
                {"item_id": call["id"], "output_index": 0, "arguments": arguments},
            ),
            ("response.output_item.done", {"output_index": 0, "item": call}),
            ("response.completed", {"response": final}),
        ]
        for seq, (kind, data) in enumerate(events):
            payload = orjson.dumps({"type": kind, "sequence_number": seq, **data})
            await resp.write(f"event: {kind}\n".encode() + b"data: " + payload + b"\n\n")
        await resp.write_eof()
        return resp


class AnthropicApi:
    requests: list[dict[str, Any]]
    anthropic_headers: dict[str, str]  # the last Messages request's headers

    async def _marks(self, body: dict[str, Any]) -> tuple[dict[str, str], web.Response | None]:
        raise NotImplementedError

    async def anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        self.anthropic_headers = {k.lower(): v for k, v in request.headers.items()}
        body = await request.json(loads=orjson.loads)
        _, failure = await self._marks(body)
        if failure is not None:
            return failure
        text = _MARK.sub("", last_user_text(body)).strip()
        answer = f"echo: {text}"
        usage = {"input_tokens": _words(body.get("messages")), "output_tokens": len(answer.split())}
        if cached := min(cached_tokens(body), usage["input_tokens"]):
            # Anthropic counts cache reads apart from input_tokens.
            usage["input_tokens"] -= cached
            usage["cache_read_input_tokens"] = cached
        if fake_agent.asks(fake_agent.user_texts(body)):
            step, said, args = fake_agent.messages_step(body)
            if step == "call":
                use = {"type": "tool_use", "id": "toolu_agent_1", "name": said, "input": args}
                return await _anthropic_tool_use_impl(request, body, use, usage)
            answer = said
        elif "[[tool]]" in last_user_text(body) and body.get("tools"):
            # Anthropic's tool use: one tool_use block, stop_reason tool_use.
            use = {
                "type": "tool_use",
                "id": "toolu_1",
                "name": body["tools"][0]["name"],
                "input": {"q": text},
            }
            return await _anthropic_tool_use_impl(request, body, use, usage)
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "stop_reason": "end_turn",
            "stop_sequence": None,
        }
        if not body.get("stream"):
            return web.json_response(
                {**message, "content": [{"type": "text", "text": answer}], "usage": usage}
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        await resp.write(_anthropic_event("message_start", {"message": start}))
        await resp.write(
            _anthropic_event(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            )
        )
        for k, word in enumerate(answer.split(" ")):
            delta = {"type": "text_delta", "text": word if k == 0 else " " + word}
            await resp.write(_anthropic_event("content_block_delta", {"index": 0, "delta": delta}))
        await resp.write(_anthropic_event("content_block_stop", {"index": 0}))
        await resp.write(
            _anthropic_event(
                "message_delta",
                {
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
        )
        await resp.write(_anthropic_event("message_stop", {}))
        await resp.write_eof()
        return resp


async def _anthropic_tool_use_impl(
    request: web.Request, body: dict[str, Any], use: dict[str, Any], usage: dict[str, int]
) -> web.StreamResponse:
    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "stop_sequence": None,
    }
    if not body.get("stream"):
        return web.json_response(
            {**message, "content": [use], "stop_reason": "tool_use", "usage": usage}
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
    }
    await resp.write(_anthropic_event("message_start", {"message": start}))
    await resp.write(
        _anthropic_event("content_block_start", {"index": 0, "content_block": {**use, "input": {}}})
    )
    delta = {"type": "input_json_delta", "partial_json": orjson.dumps(use["input"]).decode()}
    await resp.write(_anthropic_event("content_block_delta", {"index": 0, "delta": delta}))
    await resp.write(_anthropic_event("content_block_stop", {"index": 0}))
    end = {
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    await resp.write(_anthropic_event("message_delta", end))
    await resp.write(_anthropic_event("message_stop", {}))
    await resp.write_eof()
    return resp


def _anthropic_event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\n".encode() + b"data: " + orjson.dumps({"type": kind, **data}) + b"\n\n"
