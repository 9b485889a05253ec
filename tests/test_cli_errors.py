"""Command-line failures a user can cause: one line naming the cause and the fix, exit 2,
no traceback (unless --debug). Each case through the real `flywheel` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import RunningGateway
from tests.support.net import free_port


def _flywheel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )


def _one_line(done: subprocess.CompletedProcess[str], command: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.startswith(f"flywheel {command}: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_no_gateway_at_the_url_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["distill", "--status"], ["report"]):
        line = _one_line(_flywheel(*command, "--url", url, "--key", "k"), command[0])
        assert f"no gateway answers at {url}" in line and "flywheel serve" in line


def test_a_wrong_key_is_one_line_naming_the_fix(gateway: RunningGateway) -> None:
    root = gateway.base_url.removesuffix("/v1")
    line = _one_line(_flywheel("distill", "--status", "--url", root, "--key", "sk-no"), "distill")
    assert "refused the key (401" in line and "--key" in line


def test_a_store_held_by_a_running_gateway_names_the_way_in(gateway: RunningGateway) -> None:
    dsn = gateway.state.config.clickhouse_dsn
    assert dsn.startswith("chdb://")
    line = _one_line(_flywheel("query", "--dsn", dsn, "SELECT 1"), "query")
    assert "holds this embedded store" in line and "--url http://127.0.0.1:PORT --key" in line


def test_bad_sql_a_mistyped_store_and_a_missing_config_are_one_line(tmp_path: Path) -> None:
    mistyped = _one_line(_flywheel("report", "--dsn", f"chdb://{tmp_path}/nope"), "report")
    assert f"no store at {tmp_path}/nope" in mistyped
    assert not (tmp_path / "nope").exists(), "a mistyped path is not created"
    subprocess.run(
        [sys.executable, "-c", f"from store import open_store; open_store('chdb://{tmp_path}/db')"],
        check=True,
        timeout=120,
    )
    line = _one_line(_flywheel("query", "--dsn", f"chdb://{tmp_path}/db", "SELEC 1"), "query")
    assert "Syntax error" in line
    missing = _flywheel("query", "--config", str(tmp_path / "nope.yaml"), "SELECT 1")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "nope.yaml: [Errno 2] No such file" in missing.stderr  # config errors: file: why
    debug = _flywheel("--debug", "query", "--dsn", f"chdb://{tmp_path}/db", "SELEC 1")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_query_reads_a_live_store_through_its_gateway(gateway: RunningGateway) -> None:
    """`flywheel query --url`: read-only SQL through the admin API of the gateway that holds
    the embedded store; writes, several statements and bad SQL are 400s naming why."""
    import httpx

    from tests.support.gateway import ADMIN_KEY, APP_KEY

    root = gateway.base_url.removesuffix("/v1")

    def ask(sql: str, key: str = ADMIN_KEY, **extra: object) -> httpx.Response:
        return httpx.post(
            root + "/admin/api/query",
            json={"sql": sql, **extra},
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )

    ok = ask("SELECT number AS n, toString(number) AS s FROM numbers(5)", limit=3)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {
        "columns": ["n", "s"],
        "rows": [[0, "0"], [1, "1"], [2, "2"]],
        "truncated": True,
    }
    for sql, why in (
        ("INSERT INTO feedback (comment) VALUES ('x')", "not read-only"),
        ("SELECT 1; DROP TABLE requests", "one statement"),
        ("SELECT nope FROM requests", "ClickHouse refused"),
    ):
        refused = ask(sql)
        assert refused.status_code == 400 and why in refused.json()["error"]["message"], sql
    assert ask("SELECT 1", key=APP_KEY).status_code == 403
    # The read-only setting was the query's own: the gateway still records what it answers.
    import openai

    answered = openai.OpenAI(
        base_url=gateway.base_url, api_key=APP_KEY, max_retries=0
    ).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "after"}])
    assert gateway.row(answered.id)["status"] == "ok"
    shown = _flywheel("query", "--url", root, "--key", ADMIN_KEY, "SELECT 40 + 2 AS answer")
    assert shown.returncode == 0, shown.stderr
    assert "answer" in shown.stdout and "42" in shown.stdout


@pytest.mark.slow
def test_serve_names_a_key_variable_that_is_not_set(tmp_path: Path, upstream) -> None:
    from tests.support.serve_process import serve_config, start_serve, stop_serve

    os.environ.pop("FLYWHEEL_TEST_UNSET_KEY", None)
    config, port = serve_config(
        tmp_path,
        upstream.base_url,
        models={
            "teacher": {
                "model": "openai/gpt-4o",
                "api_base": upstream.base_url,
                "api_key_env": "FLYWHEEL_TEST_UNSET_KEY",
            }
        },
    )
    said = stop_serve(start_serve(config, port))
    assert (
        "flywheel serve: FLYWHEEL_TEST_UNSET_KEY is not set: teacher will answer 502 "
        "upstream_auth_failed; export FLYWHEEL_TEST_UNSET_KEY and restart"
    ) in said


def test_the_demo_on_a_taken_port_says_so_at_once(tmp_path: Path) -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = _flywheel("demo", "--quick", "--port", str(port), "--data-dir", str(tmp_path / "d"))
    line = _one_line(done, "demo")
    assert f"port {port} is taken" in line and f"--port {port + 1}" in line
    assert not (tmp_path / "d").exists(), "nothing was started or written"
