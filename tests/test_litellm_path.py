"""A provider that is not OpenAI-compatible goes through litellm and comes back in OpenAI
shapes: Anthropic's Messages API, served locally, behind a real `flywheel serve` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import openai
import pytest
import yaml

from contracts.pricing import litellm_price_table
from tests.support.gateway import APP_KEY
from tests.support.net import free_port
from tests.support.net import wait_up as _wait_up

pytestmark = pytest.mark.slow  # trains, runs children or a browser: -m 'not slow' skips


def _store_rows(config: Path) -> list[list]:
    code = (
        "import json; from gateway.config import load_config;"
        "from store import open_store;"
        f"s = open_store(load_config({str(config)!r}).clickhouse_dsn);"
        "print(json.dumps([[str(v) for v in r] for r in s.query_rows("
        "'SELECT request_id, served_model, input_tokens, output_tokens, cost_usd, status, response"
        " FROM requests ORDER BY started_at')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_anthropic_through_litellm(tmp_path: Path, upstream) -> None:
    port = free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "server": {"port": port},
                "models": {
                    "claude": {
                        "model": "anthropic/claude-sonnet-4-5",
                        "api_base": upstream.base_url.removesuffix("/v1"),
                        "api_key_env": "FAKE_ANTHROPIC_KEY",
                    }
                },
                "apps": {"shop": {"team": "retail"}},
                "keys": [{"id": "k", "key": APP_KEY, "app": "shop"}],
                "routes": [
                    {"name": "claude", "match": {"models": ["claude"]}, "teacher": "claude"}
                ],
            }
        )
    )
    env = {
        **os.environ,
        "FAKE_ANTHROPIC_KEY": "sk-ant-fake",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_up(port, proc)
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=APP_KEY, max_retries=0
        )
        plain = client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "hello claude"}], max_tokens=50
        )
        assert plain.choices[0].message.content == "echo: hello claude"
        assert plain.usage.completion_tokens == 3
        chunks = list(
            client.chat.completions.create(
                model="claude",
                messages=[{"role": "user", "content": "stream claude"}],
                max_tokens=50,
                stream=True,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "echo: stream claude"
        assert len({c.id for c in chunks}) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    rows = _store_rows(config)
    assert [r[0] for r in rows] == [plain.id, chunks[0].id]
    entry = litellm_price_table()["claude-sonnet-4-5"]
    for _, served, tokens_in, tokens_out, cost, status, response in rows:
        assert served == "claude" and status == "ok"
        assert int(tokens_out) == 3 and int(tokens_in) > 0
        expected = Decimal(str(entry["input_cost_per_token"])) * int(tokens_in) + Decimal(
            str(entry["output_cost_per_token"])
        ) * int(tokens_out)
        assert Decimal(cost) == expected
        assert "echo:" in response
