"""A local OpenAI-compatible server standing in for a paid provider in tests and benchmarks.

It answers deterministically so tests can check what the gateway logged:
- the answer is `echo: <last user text>`; usage counts whitespace-separated words;
- a model whose name starts with `broken-` always fails with 500, `slow-` answers after 3 s
  (students that crash or hang, while the teacher on the same server answers);
- markers in the last user message steer it: `[[status:503]]` fails with that status,
  `[[sleep:0.5]]` waits before answering, `[[tool]]` answers with a tool call,
  `[[drip:0.05]]` streams one word per interval (for disconnect tests), `[[nousage]]` omits
  usage, `[[cached:N]]` reports N prompt tokens read from the provider's prompt cache
  (Anthropic's shape on its API), `[[cut]]` drops the connection mid-stream, `[[differ]]`
  makes student-* models answer differently from the teacher, `fewshot-*` models answer
  from the examples in their prompt (the nearest one's answer), `[[conf:0.3]]` sets the
  probability of
  every token in the logprobs returned when the request asks for `logprobs` (default 0.9);
- a guardrail self-check prompt ("... be blocked (Yes or No)?") is answered Yes when the
  checked text carries `[[unsafe]]`, else No; an agreement-judge prompt ("... Same? YES or
  NO.") is answered YES when candidate and reference are equal, case and spacing aside
  (`[[judgefail:503]]` in the judged prompt fails that judge call alone);
- `[[agent]]` makes it a coding model (`tests/support/fake_agent.py`): it calls the agent's
  shell tool, then reports the command's output, in chat and in Responses (native) form.
Run alone: `python -m tests.support.fake_upstream --port 9001`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import threading
import time
from typing import Any

import orjson
from aiohttp import web

from contracts.openai_shapes import last_user_text
from tests.support import fake_agent
from tests.support.fake_apis import AnthropicApi, ResponsesApi
from tests.support.fake_marks import MARK as _MARK
from tests.support.fake_marks import cached_tokens
from tests.support.fake_marks import words as _words

_JUDGE = re.compile(
    r"Reference answer:\n(?P<ref>.*)\n\nCandidate answer:\n(?P<cand>.*)\n\nSame\? YES or NO\.",
    re.S,
)


def _usage(body: dict[str, Any], answer: str) -> dict[str, Any]:
    prompt = _words(body.get("messages", body.get("prompt", "")))
    completion = len(answer.split())
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached := min(cached_tokens(body), prompt):  # OpenAI: counted in prompt_tokens too
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _in_context(body: dict[str, Any], text: str) -> tuple[str, float]:
    """A small model that learns only from the examples in its prompt: it answers what the
    example whose user turn shares the most words with the question was answered (its
    confidence grows with the overlap); `fewshot-blind-*` ignores its examples."""
    messages = body.get("messages") or []
    pairs = [
        (str(messages[i].get("content")), str(messages[i + 1].get("content")))
        for i in range(len(messages) - 2)
        if messages[i].get("role") == "user" and messages[i + 1].get("role") == "assistant"
    ]
    if not pairs or str(body.get("model")).startswith("fewshot-blind"):
        return "I am not sure.", 0.3
    asked = set(text.lower().split())

    def overlap(pair: tuple[str, str]) -> float:
        seen = set(pair[0].lower().split())
        return len(asked & seen) / max(1, len(asked | seen))

    best = max(pairs, key=overlap)
    return best[1], 0.5 + 0.5 * overlap(best)


class FakeUpstream(ResponsesApi, AnthropicApi):
    """Counts requests so tests can tell whether the gateway called it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/completions", self.completions)
        self.app.router.add_post("/v1/embeddings", self.embeddings)
        self.app.router.add_get("/v1/models", self.models)
        # Anthropic's Messages API: a provider that only litellm's path speaks.
        self.app.router.add_post("/v1/messages", self.anthropic_messages)
        # OpenAI's Responses API, served natively (answers say "native:"; ids are its own).
        self.app.router.add_post("/v1/responses", self.responses)
        self.responses_by_id: dict[str, str] = {}

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _marks(self, body: dict[str, Any]) -> tuple[dict[str, str], web.Response | None]:
        self.requests.append(body)
        marks = {m.group(1): m.group(2) or "" for m in _MARK.finditer(last_user_text(body))}
        if fake_agent.asks(fake_agent.user_texts(body)):
            marks["agent"] = ""  # an agent's later turns end in tool results, not its task
        model = str(body.get("model", ""))
        if model.startswith("broken-"):
            marks["status"] = "500"
        elif model.startswith("slow-"):
            marks["sleep"] = "3"
        if "judgefail" in marks and _JUDGE.search(last_user_text(body)):
            marks["status"] = marks["judgefail"] or "503"  # only the agreement judge fails
        if "sleep" in marks:
            await asyncio.sleep(float(marks["sleep"]))
        if "status" in marks:
            status = int(marks["status"])
            err: dict[str, Any] = {
                "error": {
                    "message": f"fake failure {status} (key sk-fake-secret-123456)",
                    "type": "server_error",
                }
            }
            headers = {}
            if status == 400:  # as OpenAI names a bad field
                err["error"].update(param="messages", code="fake_invalid_messages")
            if status == 429:
                headers = {"retry-after": "7", "x-ratelimit-remaining-requests": "0"}
            return marks, web.json_response(err, status=status, headers=headers)
        return marks, None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        marks, failure = await self._marks(body)
        if failure is not None:
            return failure
        text = _MARK.sub("", last_user_text(body)).strip()
        answer = f"echo: {text}"
        if "differ" in marks and str(body.get("model", "")).startswith("student"):
            answer = f"student guess: {text}"  # a student that disagrees with its teacher
        confidence = float(marks.get("conf") or 0.9)
        if str(body.get("model", "")).startswith("fewshot-"):
            answer, confidence = _in_context(body, text)
        if "be blocked (Yes or No)" in last_user_text(body):
            # A guardrail self-check: judge by the [[unsafe]] marker in the checked text.
            answer = "Yes" if "[[unsafe]]" in last_user_text(body) else "No"
        judged = _JUDGE.search(last_user_text(body))
        if judged:
            # An agreement judge: the same answer, case and spacing aside.
            same = " ".join(judged["ref"].lower().split()) == " ".join(
                judged["cand"].lower().split()
            )
            answer = "YES" if same else "NO"
        n = int(body.get("n") or 1)
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        finish = "stop"
        if "agent" in marks:  # a coding model: call the agent's shell, then report
            step, said, args = fake_agent.chat_step(body)
            if step == "say":
                answer = said
                message = {"role": "assistant", "content": answer}
            else:
                call = {"name": said, "arguments": orjson.dumps(args).decode()}
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "call_agent_1", "type": "function", "function": call}],
                }
                finish = "tool_calls"
        elif "tool" in marks and body.get("tools"):
            fn = body["tools"][0]["function"]["name"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": fn, "arguments": '{"q": "' + text + '"}'},
                    }
                ],
            }
            finish = "tool_calls"
        usage = _usage(body, answer)
        if body.get("stream"):
            if message.get("tool_calls"):
                return await self._stream_tool_call(request, body, message, usage)
            return await self._stream(request, body, marks, answer, usage, n)
        logprobs = None
        if body.get("logprobs"):
            lp = math.log(confidence)
            # Every field OpenAI sends per token (litellm 1.108 refuses entries without
            # `top_logprobs`, which OpenAI sends as [] unless asked for alternatives); the
            # token's own entry is its only alternative.
            top = int(body.get("top_logprobs") or 0)
            entries = [
                {"token": w, "logprob": lp, "bytes": list(w.encode())} for w in answer.split()
            ]
            logprobs = {
                "content": [{**e, "top_logprobs": [e][:top]} for e in entries],
                "refusal": None,
            }
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [
                    {"index": i, "message": message, "finish_reason": finish, "logprobs": logprobs}
                    for i in range(n)
                ],
                **({} if "nousage" in marks else {"usage": usage}),
            },
            dumps=lambda o: orjson.dumps(o).decode(),
            # A provider's own rate-limit state, as OpenAI sends it.
            headers={
                "x-ratelimit-limit-requests": "10000",
                "x-ratelimit-remaining-requests": "9999",
            },
        )

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        marks: dict[str, str],
        answer: str,
        usage: dict[str, int],
        n: int,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        drip = float(marks.get("drip") or 0)
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body.get("model", "fake"),
        }
        words = answer.split(" ")
        for i in range(n):
            first = {
                **base,
                "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}}],
            }
            await resp.write(b"data: " + orjson.dumps(first) + b"\n\n")
        for k, word in enumerate(words):
            if "cut" in marks and k == 2:
                assert request.transport is not None
                request.transport.close()
                return resp
            piece = word if k == 0 else " " + word
            for i in range(n):
                chunk = {**base, "choices": [{"index": i, "delta": {"content": piece}}]}
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if drip:
                await asyncio.sleep(drip)
        for i in range(n):
            last = {**base, "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]}
            await resp.write(b"data: " + orjson.dumps(last) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage") and "nousage" not in marks:
            await resp.write(
                b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
            )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _stream_tool_call(
        self,
        request: web.Request,
        body: dict[str, Any],
        message: dict[str, Any],
        usage: dict[str, int],
    ) -> web.StreamResponse:
        """A tool call streamed as OpenAI does: name first, arguments in pieces."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0}
        call = message["tool_calls"][0]
        args = call["function"]["arguments"]
        head = {"index": 0, "id": call["id"], "type": "function"}
        deltas = [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {**head, "function": {"name": call["function"]["name"], "arguments": ""}}
                ],
            },
            {"tool_calls": [{"index": 0, "function": {"arguments": args[: len(args) // 2]}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": args[len(args) // 2 :]}}]},
        ]
        for delta in deltas:
            chunk = {**base, "choices": [{"index": 0, "delta": delta}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        await resp.write(b"data: " + orjson.dumps(last) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(
                b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
            )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        _, failure = await self._marks(body)
        if failure is not None:
            return failure
        answer = f"echo: {_MARK.sub('', last_user_text(body)).strip()}"
        return web.json_response(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 0,
                "model": body.get("model", "fake"),
                "choices": [
                    {"index": 0, "text": answer, "finish_reason": "stop", "logprobs": None}
                ],
                "usage": _usage(body, answer),
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        self.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1 * (i + 1)] * 8}
            for i in range(len(inputs))
        ]
        tokens = sum(len(str(x).split()) for x in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


class FakeUpstreamThread:
    """Runs a FakeUpstream on 127.0.0.1 in a background thread with its own loop."""

    def __init__(self, port: int = 0) -> None:
        self.fake = FakeUpstream()
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.fake.app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        server: Any = site._server  # aiohttp keeps the asyncio.Server here
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> FakeUpstreamThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(FakeUpstream().app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
