"""curl, unchanged, against the gateway: plain JSON and a streamed answer."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.support.gateway import APP_KEY, RunningGateway

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def _curl(gw: RunningGateway, body: dict, *extra: str) -> str:
    return subprocess.run(
        [
            "curl",
            "-sS",
            f"{gw.base_url}/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-H",
            f"Authorization: Bearer {APP_KEY}",
            "-d",
            json.dumps(body),
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def test_curl_plain(gateway: RunningGateway) -> None:
    out = json.loads(
        _curl(gateway, {"model": "gpt-4o", "messages": [{"role": "user", "content": "from curl"}]})
    )
    assert out["choices"][0]["message"]["content"] == "echo: from curl"


def test_curl_stream_ends_with_done(gateway: RunningGateway) -> None:
    out = _curl(
        gateway,
        {
            "model": "gpt-4o",
            "stream": True,
            "messages": [{"role": "user", "content": "sse please"}],
        },
        "-N",
    )
    events = [e for e in out.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"])
    assert text == "echo: sse please"
