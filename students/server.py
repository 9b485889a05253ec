"""The local student server: OpenAI-compatible chat completions over transformers.

- `POST /v1/chat/completions`, plain and streaming (SSE ending `data: [DONE]`), greedy by
  default (sampling when `temperature` > 0); every answer carries token `logprobs` when asked
  and a `confidence` (geometric mean of its token probabilities) the router escalates on.
- Concurrent requests are batched dynamically: a worker thread takes what is queued (up to
  `max_batch`, waiting at most `batch_wait_s` for more), generates once for the padded
  batch, and answers each request. Greedy batched answers equal one-by-one answers.
- `POST /admin/models {name, path}` loads a model (a merged student, or a base plus
  `adapter`) off the request path and swaps it in whole; requests in flight finish on the
  model they started with. `GET /v1/models` lists what is loaded.
- Streaming sends the answer's tokens as chunks once its batch is generated (on CPU a tiny
  student's whole answer takes milliseconds; token-by-token streaming would cost batching).

Invariant: a request is answered by exactly one loaded model version, start to end.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from contracts.errors import ApiError
from students.generation import Loaded, generate_batch, load_student

log = logging.getLogger("flywheel.students")


@dataclass
class Job:
    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float
    future: asyncio.Future[dict[str, Any]]
    loop: asyncio.AbstractEventLoop
    stop: list[str] = field(default_factory=list)


class StudentServer:
    def __init__(self, max_batch: int = 16, batch_wait_s: float = 0.005) -> None:
        self.models: dict[str, Loaded] = {}
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self._queue: queue.Queue[tuple[str, Job]] = queue.Queue()
        self.batches: list[int] = []  # sizes of recent batches (for tests and metrics)
        # One load at a time: transformers' lazy imports are not safe across threads (seen:
        # two publishes at once, "cannot import name 'AutoModelForCausalLM'"), and two
        # models loading at once would double the peak memory.
        self.loading = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="student-batcher", daemon=True)
        self._thread.start()

    def put(self, student: Loaded) -> None:
        """Swap a model in whole; in-flight jobs keep the reference they were queued with."""
        self.models[student.name] = student

    def _work(self) -> None:
        while True:
            name, first = self._queue.get()
            batch = [(name, first)]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            by_model: dict[str, list[Job]] = {}
            for n, job in batch:
                by_model.setdefault(n, []).append(job)
            for n, jobs in by_model.items():
                student = self.models[n]
                self.batches.append(len(jobs))
                del self.batches[:-100]
                try:
                    results = generate_batch(student, jobs)
                except Exception as e:  # a broken model answers each job with an error
                    log.exception("generation failed for %s", n)
                    for job in jobs:
                        job.loop.call_soon_threadsafe(job.future.set_exception, e)
                    continue
                for job, res in zip(jobs, results, strict=True):
                    res["model_version"] = student.version
                    job.loop.call_soon_threadsafe(job.future.set_result, res)

    async def complete(self, name: str, job: Job) -> dict[str, Any]:
        self._queue.put((name, job))
        return await job.future


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _completion(
    request_id: str, name: str, res: dict[str, Any], want_logprobs: bool
) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "finish_reason": res["finish_reason"],
        "message": {"role": "assistant", "content": res["text"]},
        "logprobs": {
            "content": [
                {"token": t, "logprob": lp, "top_logprobs": []}
                for t, lp in zip(res["tokens"], res["logprobs"], strict=True)
            ]
        }
        if want_logprobs
        else None,
    }
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [choice],
        "confidence": res["confidence"],
        **({"out_of_scope": True} if res.get("out_of_scope") else {}),
        "system_fingerprint": res["model_version"],
        "usage": {
            "prompt_tokens": res["prompt_tokens"],
            "completion_tokens": res["completion_tokens"],
            "total_tokens": res["prompt_tokens"] + res["completion_tokens"],
        },
    }


def build_student_app(server: StudentServer) -> Starlette:
    async def chat(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return ApiError(400, "The body is not JSON.", code="invalid_json").response()
        name = body.get("model")
        if name not in server.models:
            return ApiError(
                404,
                f"The model `{name}` is not loaded here.",
                code="model_not_found",
                param="model",
            ).response()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return ApiError(
                422, "`messages` must be a non-empty list.", code="invalid_value", param="messages"
            ).response()
        stop = body.get("stop") or []
        loop = asyncio.get_running_loop()
        job = Job(
            messages,
            int(body.get("max_tokens") or body.get("max_completion_tokens") or 128),
            float(body.get("temperature") or 0.0),
            loop.create_future(),
            loop,
            [stop] if isinstance(stop, str) else list(stop),
        )
        res = await server.complete(name, job)
        answer = _completion(f"chatcmpl-{uuid.uuid4().hex}", name, res, bool(body.get("logprobs")))
        if not body.get("stream"):
            return _json(answer)
        return StreamingResponse(_as_stream(answer, body), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return _json(
            {
                "object": "list",
                "data": [
                    {
                        "id": m.name,
                        "object": "model",
                        "created": 0,
                        "owned_by": "flywheel",
                        "root": m.path,
                        "version": m.version,
                    }
                    for m in server.models.values()
                ],
            }
        )

    def _load(name: str, path: str, adapter: str | None) -> Loaded:
        with server.loading:
            return load_student(name, path, adapter)

    async def load_model(request: Request) -> Response:
        body = orjson.loads(await request.body())
        try:
            name, path, adapter = body["name"], body["path"], body.get("adapter")
            student = await asyncio.to_thread(_load, name, path, adapter)
        except (KeyError, OSError, ValueError) as e:
            return ApiError(400, f"Cannot load model: {e}", code="load_failed").response()
        server.put(student)
        return _json({"name": student.name, "path": student.path, "version": student.version})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/admin/models", load_model, methods=["POST"]),
        ]
    )


async def _as_stream(answer: dict[str, Any], body: dict[str, Any]) -> Any:
    from contracts.openai_shapes import answer_as_events

    if not (body.get("stream_options") or {}).get("include_usage"):
        answer = {k: v for k, v in answer.items() if k != "usage"}
    for event in answer_as_events(answer):
        yield event + b"\n\n"
