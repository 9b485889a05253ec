"""The local teacher: an OpenAI-compatible server standing in for a large paid model.

It answers from the traffic generator's ground truth (so "the teacher" is always right), with
a frontier model's latency, and is priced like one in the demo's config. It is plainly a
stand-in: no language model runs behind it.
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import orjson
from aiohttp import web


class LocalTeacher:
    def __init__(self, truth: dict[str, str], latency_s: tuple[float, float]) -> None:
        self.truth = truth
        self.latency_s = latency_s
        self.port = 0
        self._loop = asyncio.new_event_loop()

    async def _chat(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json(loads=orjson.loads)
        await asyncio.sleep(random.uniform(*self.latency_s))
        text = body["messages"][-1].get("content") or ""
        answer = self.truth.get(text, "I am not sure about that.")
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion = len(answer.split())
        return web.json_response(
            {
                "id": "teacher",
                "object": "chat.completion",
                "created": 0,
                "model": "teacher",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": answer},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens + 8,
                    "completion_tokens": completion,
                    "total_tokens": prompt_tokens + 8 + completion,
                },
            }
        )

    def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)

        async def models(request: web.Request) -> web.Response:
            return web.json_response({"data": []})

        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.port}/v1"
