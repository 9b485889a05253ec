"""Coding agents through the gateway: Codex and Claude Code, the real CLIs from npm (`codex
exec`, `claude -p`, their default configs but for the provider), each complete a task that
needs a shell command and its result, on the native path (an upstream that serves the
client's own API) and the translated one (a chat-completions upstream). The upstream is the
coding-model stand-in (`tests/support/fake_agent.py`): it calls the agent's shell, then
reports what it printed.

The fixture `tests/data/agents/codex-0.171.0-responses.json` is the first request Codex
0.171.0 sent (recorded on the native path): the fast tests replay it where npm is missing.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_clis import agent_cli
from tests.support.gateway import (
    APP_KEY,
    RunningGateway,
    gateway_config,
    start_gateway,
    with_anthropic_route,
)

CODEX_VERSION = "0.171.0"
CODEX_FIRST = Path(__file__).parent / "data" / "agents" / f"codex-{CODEX_VERSION}-responses.json"


def _codex_body(model: str) -> dict[str, Any]:
    body = json.loads(CODEX_FIRST.read_text())
    return {**body, "model": model}


def _post(gateway: RunningGateway, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/responses",
        json=body,
        headers={"Authorization": f"Bearer {APP_KEY}"},
        timeout=30,
    )


def _events(resp: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]


def test_codexs_first_request_passes_through_to_a_responses_upstream_as_sent(
    gateway: RunningGateway, upstream
) -> None:
    """Namespaces, `web_search`, `prompt_cache_key`, `client_metadata`: an upstream that
    serves the Responses API gets every field Codex sent (only `model` named its own way),
    and Codex gets the upstream's function call back."""
    body = _codex_body("native-responses")
    resp = _post(gateway, body)
    assert resp.status_code == 200, resp.text
    sent = upstream.fake.requests[-1]
    assert {k: v for k, v in sent.items() if k != "model"} == {
        k: v for k, v in body.items() if k != "model"
    }
    done = next(e for e in _events(resp) if e["type"] == "response.completed")["response"]
    call = done["output"][0]
    assert (call["type"], call["name"]) == ("function_call", "exec_command")
    assert json.loads(call["arguments"]) == {"cmd": "echo flywheel-$((6*7))"}


def test_codexs_first_request_translated_for_a_chat_upstream(
    gateway: RunningGateway, upstream
) -> None:
    """As sent (default config), it carries `web_search`, which a chat upstream cannot run:
    a 400 naming the tool, before anything goes upstream. Without it (Codex's `web_search =
    "disabled"`), the namespaced tools go up flattened, the cache key is kept, and the
    stream carries the shell call back in Responses form."""
    body = _codex_body("gpt-4o")
    asked = len(upstream.fake.requests)
    bad = _post(gateway, body)
    assert bad.status_code == 400
    web = next(i for i, t in enumerate(body["tools"]) if t["type"] == "web_search")
    assert bad.json()["error"]["param"] == f"tools.{web}.type"
    assert len(upstream.fake.requests) == asked
    body["tools"] = [t for t in body["tools"] if t["type"] != "web_search"]
    resp = _post(gateway, body)
    assert resp.status_code == 200, resp.text
    sent = upstream.fake.requests[-1]
    names = [t["function"]["name"] for t in sent["tools"]]
    assert "exec_command" in names and "multi_agent_v1__spawn_agent" in names
    assert sent["prompt_cache_key"] == body["prompt_cache_key"]
    assert [m["role"] for m in sent["messages"]][-2:] == ["user", "user"]
    done = next(e for e in _events(resp) if e["type"] == "response.completed")["response"]
    call = done["output"][0]
    assert (call["type"], call["name"]) == ("function_call", "exec_command")
    # Codex's reasoning summary cannot be asked of a chat upstream: left out, and said so.
    assert resp.headers["x-flywheel-not-carried"] == "reasoning"
    # A parameter chat has no word for is a 400 naming it, not a silent drop.
    odd = copy.deepcopy(body) | {"max_tool_calls": 3}
    refused = _post(gateway, odd)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_tool_calls"
    later = _post(gateway, copy.deepcopy(body) | {"background": True})
    assert later.status_code == 400 and later.json()["error"]["param"] == "background"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "config"),
    [
        ("native-responses", []),  # default config: web_search and all
        ("gpt-4o", ['web_search="disabled"']),  # a chat upstream cannot run web_search
    ],
    ids=["native", "translated"],
)
def test_codex_completes_a_task_with_a_tool_call_through_the_gateway(
    gateway: RunningGateway, upstream, tmp_path: Path, model: str, config: list[str]
) -> None:
    codex = agent_cli("@openai/codex", CODEX_VERSION, "codex")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    provider = (
        f'model_providers.flywheel={{name="flywheel", base_url="{gateway.base_url}", '
        'env_key="FLYWHEEL_KEY", wire_api="responses"}'
    )
    args = [str(codex), "exec", "--skip-git-repo-check", "-C", str(work)]
    for c in ["model_provider=flywheel", provider, f"model={model}", *config]:
        args += ["-c", c]
    asked = len(upstream.fake.requests)
    run = subprocess.run(
        [*args, "run the check [[agent]]"],
        env={**os.environ, "CODEX_HOME": str(home), "HOME": str(home), "FLYWHEEL_KEY": APP_KEY},
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    # The shell ran the model's command, and the model's answer carries its output.
    assert "done:" in run.stdout and "flywheel-42" in run.stdout.split("done:", 1)[1]
    turns = upstream.fake.requests[asked:]
    assert len(turns) == 2  # the call, then the answer after its result
    # The turn that carried the result back is a row, on the path it took.
    native = "=" if model == "native-responses" else "!="
    rows = gateway.rows_eventually(
        "SELECT served_model, status FROM requests WHERE api = 'responses' AND "
        f"served_model {native} 'native-responses' AND position(messages, 'flywheel-42') > 0",
        1,
    )
    assert rows[0]["status"] == "ok"


CLAUDE_CODE_VERSION = "2.1.337"


@pytest.fixture(scope="module")
def claude_gateway(tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[RunningGateway]:
    """A gateway with an Anthropic upstream too (model `claude`, called natively)."""
    os.environ.setdefault("FAKE_ANTHROPIC_KEY", "sk-ant-fake")
    config = gateway_config(tmp_path_factory.mktemp("claude-gw"), upstream.base_url)
    gw = start_gateway(with_anthropic_route(config, upstream.base_url))
    yield gw
    gw.stop()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["claude", "gpt-4o"], ids=["native", "translated"])
def test_claude_code_completes_a_task_with_a_tool_call_through_the_gateway(
    claude_gateway: RunningGateway, upstream, tmp_path: Path, model: str
) -> None:
    """Claude Code (`claude -p`, default config but for the base URL and its Bash tool
    allowed) on an Anthropic upstream, the body passed through as sent (thinking,
    context_management, output_config kept), and on a chat upstream, translated."""
    claude = agent_cli("@anthropic-ai/claude-code", CLAUDE_CODE_VERSION, "claude")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": claude_gateway.base_url.removesuffix("/v1"),
        "ANTHROPIC_API_KEY": APP_KEY,
        "DISABLE_AUTOUPDATER": "1",
    }
    asked = len(upstream.fake.requests)
    run = subprocess.run(
        [str(claude), "-p", "run the check [[agent]]", "--model", model, "--allowedTools", "Bash"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stdout.strip() == "done: flywheel-42"
    turns = [q for q in upstream.fake.requests[asked:] if "[[agent]]" in json.dumps(q)]
    assert len(turns) == 2  # the call, then the answer after its result
    if model == "claude":  # natively: Claude Code's own fields reach the Anthropic upstream
        assert {"thinking", "context_management", "system"} <= set(turns[0])
        assert turns[1]["messages"][-1]["content"][0]["type"] == "tool_result"
    else:
        assert turns[1]["messages"][-1]["role"] == "tool"
        assert "flywheel-42" in turns[1]["messages"][-1]["content"]
    rows = claude_gateway.rows_eventually(
        "SELECT served_model, status FROM requests WHERE api = 'messages' AND "
        "served_model = {m:String} AND position(messages, 'flywheel-42') > 0",
        1,
        m="claude" if model == "claude" else "teacher",
    )
    assert rows[0]["status"] == "ok"
