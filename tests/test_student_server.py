"""The local student server through the real openai SDK: plain, streaming, logprobs and
confidence, batching equal to one-by-one, and a hot swap under traffic with no failure.
Also the vLLM adapter client against the request shapes vLLM documents."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import uvicorn
from aiohttp import web

from distiller.base_model import build_tiny_base
from students.generation import Request, generate_batch, load_student
from students.server import StudentServer, build_student_app
from students.vllm_client import VllmAdapterError, VllmAdapters
from tests.support.net import free_port
from tests.support.wait import eventually

pytestmark = pytest.mark.slow  # trains, runs children or a browser: -m 'not slow' skips

TEXTS = [
    f"order {i} for customer {i * 7} is {w}"
    for i, w in enumerate(["late", "lost", "early", "fine", "broken", "missing"] * 10)
]


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("students")
    a = build_tiny_base(TEXTS, root / "a", pretrain_steps=30, seed=1)
    b = build_tiny_base(TEXTS, root / "b", pretrain_steps=30, seed=2)
    return a, b


@pytest.fixture(scope="module")
def student_url(bases: tuple[Path, Path]) -> Iterator[tuple[str, StudentServer]]:
    server = StudentServer(max_batch=8, batch_wait_s=0.02)
    server.put(load_student("student", bases[0]))
    port = free_port()
    uv = uvicorn.Server(
        uvicorn.Config(build_student_app(server), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=lambda: asyncio.run(uv.serve()), daemon=True)
    thread.start()
    assert eventually(lambda: uv.started, 60)
    yield f"http://127.0.0.1:{port}/v1", server
    uv.should_exit = True
    thread.join(10)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0)


def test_plain_and_stream_through_the_sdk(student_url) -> None:
    url, _ = student_url
    client = _client(url)
    messages = [{"role": "user", "content": "order 3 for customer 21 is"}]
    resp = client.chat.completions.create(
        model="student", messages=messages, max_tokens=8, logprobs=True
    )
    choice = resp.choices[0]
    assert resp.usage.completion_tokens == len(choice.logprobs.content) > 0
    assert 0 < resp.model_extra["confidence"] <= 1
    chunks = list(
        client.chat.completions.create(
            model="student", messages=messages, max_tokens=8, stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == choice.message.content, "greedy: the stream says the same"
    ids = {m.id for m in client.models.list()}
    assert ids == {"student"}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=messages)


def test_batched_generation_equals_one_by_one(bases: tuple[Path, Path]) -> None:
    student = load_student("s", bases[0])
    prompts = [Request([{"role": "user", "content": t}], 10) for t in TEXTS[:8]]
    batched = generate_batch(student, prompts)
    single = [generate_batch(student, [p])[0] for p in prompts]
    assert [b["text"] for b in batched] == [s["text"] for s in single]
    for b, s in zip(batched, single, strict=True):
        assert b["confidence"] == pytest.approx(s["confidence"], rel=1e-3)


def test_concurrent_requests_are_batched_and_hot_swap_fails_none(
    student_url, bases: tuple[Path, Path]
) -> None:
    url, server = student_url
    import httpx

    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        client = _client(url)
        while not stop.is_set():
            try:
                r = client.chat.completions.create(
                    model="student",
                    messages=[{"role": "user", "content": "order 5 is"}],
                    max_tokens=6,
                )
                versions.append(r.system_fingerprint)
            except Exception as e:
                failures.append(repr(e))

    workers = [threading.Thread(target=traffic) for _ in range(6)]
    for w in workers:
        w.start()
    eventually(lambda: versions, 30, lambda v: len(v) >= 6)  # traffic is flowing
    old = server.models["student"].version
    r = httpx.post(
        url.removesuffix("/v1") + "/admin/models",
        json={"name": "student", "path": str(bases[1])},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    new = r.json()["version"]
    served = len(versions)
    eventually(lambda: versions, 30, lambda v: len(v) >= served + 6)  # and goes on after
    stop.set()
    for w in workers:
        w.join()
    assert failures == []
    assert old in versions and new in versions
    assert versions.index(new) > versions.index(old)
    assert max(server.batches) > 1, "concurrent requests shared a generate call"


def test_vllm_adapter_client_speaks_vllms_shapes() -> None:
    seen: list[tuple[str, dict]] = []
    loaded: set[str] = set()

    async def load(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, body))
        if set(body) != {"lora_name", "lora_path"}:
            return web.Response(status=400, text="bad request")
        loaded.add(body["lora_name"])
        return web.Response(text=f"Success: LoRA adapter '{body['lora_name']}' added.")

    async def unload(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, body))
        if body.get("lora_name") not in loaded:
            return web.Response(status=404, text="adapter not found")
        loaded.discard(body["lora_name"])
        return web.Response(text="Success")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "base"}, *({"id": n} for n in loaded)]})

    app = web.Application()
    app.router.add_post("/v1/load_lora_adapter", load)
    app.router.add_post("/v1/unload_lora_adapter", unload)
    app.router.add_get("/v1/models", models)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    threading.Thread(target=loop.run_forever, daemon=True).start()

    client = VllmAdapters(f"http://127.0.0.1:{port}/v1")
    assert "added" in client.load("triage-small", "/models/triage-small/adapter")
    assert set(client.models()) == {"base", "triage-small"}
    client.unload("triage-small")
    with pytest.raises(VllmAdapterError, match="404"):
        client.unload("triage-small")
    assert seen[0] == (
        "/v1/load_lora_adapter",
        {"lora_name": "triage-small", "lora_path": "/models/triage-small/adapter"},
    )
    assert seen[1] == ("/v1/unload_lora_adapter", {"lora_name": "triage-small"})
    client.close()
    loop.call_soon_threadsafe(loop.stop)


def test_distiller_publishes_to_the_student_server(student_url, bases, tmp_path: Path) -> None:
    from contracts.model_config import ModelConfig
    from distiller.publishing import publish

    url, _ = student_url
    (tmp_path / "merged").symlink_to(bases[1])
    note = publish(
        ModelConfig(
            model="flywheel/published-student", api_base=url, price={"input_per_million": "0.01"}
        ),
        tmp_path,
    )
    assert note.startswith("loaded as published-student")
    resp = _client(url).chat.completions.create(
        model="published-student",
        messages=[{"role": "user", "content": "order 1 is"}],
        max_tokens=4,
    )
    assert resp.choices[0].message.content is not None


def test_serve_starts_the_student_server_and_routes_to_it(bases, tmp_path: Path) -> None:
    """`students.enabled` in the gateway config: `flywheel serve` runs the student server as
    its child, and a route whose model is `flywheel/<name>` reaches it through the gateway."""
    import os
    import signal
    import subprocess
    import sys

    import httpx
    import yaml

    from tests.support.gateway import APP_KEY
    from tests.support.net import wait_up as _wait_up

    port, student_port = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "server": {"port": port},
                "students": {
                    "enabled": True,
                    "port": student_port,
                    "models": {"local": str(bases[0])},
                },
                "models": {
                    "local-student": {
                        "model": "flywheel/local",
                        "api_base": f"http://127.0.0.1:{student_port}/v1",
                        "price": {"input_per_million": "0.01"},
                    }
                },
                "apps": {"shop": {"team": "retail"}},
                "keys": [{"id": "k", "key": APP_KEY, "app": "shop"}],
                "routes": [
                    {"name": "local", "match": {"models": ["local"]}, "teacher": "local-student"}
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    try:
        _wait_up(port, proc)
        _wait_up(student_port, proc, "/v1/models", 120)
        resp = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=APP_KEY, max_retries=0
        ).chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": "order 2 for customer 14"}],
            max_tokens=6,
        )
        assert resp.choices[0].message.content is not None
        assert resp.usage.completion_tokens > 0
        # The same student serves a Responses-API app and an Anthropic-SDK app.
        import anthropic

        answered = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=APP_KEY, max_retries=0
        ).responses.create(model="local", input="order 3 for customer 15", max_output_tokens=6)
        assert answered.status in ("completed", "incomplete") and answered.usage is not None
        assert answered.usage.output_tokens > 0 and answered.output
        message = anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{port}", api_key=APP_KEY, max_retries=0
        ).messages.create(
            model="local",
            max_tokens=6,
            messages=[{"role": "user", "content": "order 4 for customer 16"}],
        )
        assert message.usage.output_tokens > 0 and message.content
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    def student_gone() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{student_port}/v1/models", timeout=2)
        except httpx.TransportError:
            return True
        return False

    assert eventually(student_gone, 10)
