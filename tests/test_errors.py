"""Bad input and upstream failures: the right status, OpenAI's error shape, and a logged row."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.gateway import APP_KEY, RunningGateway


def _post(
    gw: RunningGateway, path: str, content: bytes | str, key: str | None = APP_KEY, **headers: str
) -> httpx.Response:
    h = {"Content-Type": "application/json", **headers}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{gw.base_url}{path}", content=content, headers=h, timeout=10)


def _assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] and "Traceback" not in r.text
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


CHAT = '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.mark.parametrize(
    ("key", "code"), [(None, "missing_api_key"), ("sk-wrong", "invalid_api_key")]
)
def test_missing_or_unknown_key_is_401(gateway: RunningGateway, key, code) -> None:
    r = _post(gateway, "/chat/completions", CHAT, key=key)
    _assert_error(r, 401, code)
    assert r.headers.get("x-request-id"), "every answer carries a request id, errors too"


def test_openai_sdk_raises_authentication_error(gateway: RunningGateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_malformed_json_is_400(gateway: RunningGateway) -> None:
    err = _assert_error(_post(gateway, "/chat/completions", '{"model": '), 400, "invalid_json")
    assert "JSON" in err["message"]
    _assert_error(_post(gateway, "/chat/completions", "[1, 2]"), 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"messages": [{"role": "user", "content": "x"}]}', "model"),
        ('{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        ('{"model": "gpt-4o", "messages": "hello"}', "messages"),
        ('{"model": "gpt-4o", "messages": []}', "messages"),
        (
            '{"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages.0.role",
        ),
        (
            '{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            "stream",
        ),
        ('{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 0}', "n"),
        (
            '{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], '
            '"temperature": "hot"}',
            "temperature",
        ),
        (
            '{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], '
            '"max_tokens": "lots"}',
            "max_tokens",
        ),
        (
            '{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "top_p": 3}',
            "top_p",
        ),
    ],
)
def test_wrong_types_are_400_naming_the_field(gateway: RunningGateway, body, param) -> None:
    err = _assert_error(_post(gateway, "/chat/completions", body), 400, "invalid_value")
    assert err["param"] == param


def test_unknown_model_is_404_and_logged(gateway: RunningGateway) -> None:
    r = _post(
        gateway,
        "/chat/completions",
        '{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}',
    )
    err = _assert_error(r, 404, "model_not_found")
    assert "gpt-9" in err["message"] and err["param"] == "model"
    rows = gateway.rows(
        "SELECT status, http_status, requested_model FROM requests WHERE request_id = {id:UUID}",
        id=r.headers["x-request-id"],
    )
    assert rows == [{"status": "rejected", "http_status": 404, "requested_model": "gpt-9"}]


def test_oversize_body_is_413(gateway: RunningGateway) -> None:
    limit = gateway.state.config.server.max_body_bytes
    big = '{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + "x" * limit + '"}]}'
    _assert_error(_post(gateway, "/chat/completions", big), 413, "too_large")


def test_unknown_path_and_method_are_openai_shaped(gateway: RunningGateway) -> None:
    _assert_error(httpx.get(f"{gateway.base_url}/nothing-here"), 404)
    _assert_error(httpx.get(f"{gateway.base_url}/chat/completions"), 405)


def _chat(gw: RunningGateway, text: str) -> httpx.Response:
    return _post(
        gw,
        "/chat/completions",
        '{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + text + '"}]}',
    )


@pytest.mark.parametrize(
    ("marker", "status", "code", "row_status"),
    [
        ("[[status:500]]", 502, "upstream_error", "upstream_error"),
        ("[[status:503]]", 502, "upstream_error", "upstream_error"),
        ("[[status:401]]", 502, "upstream_auth_failed", "upstream_error"),
        ("[[status:429]]", 429, "upstream_rate_limited", "upstream_error"),
        ("[[status:400]]", 400, "fake_invalid_messages", "upstream_error"),
        ("[[sleep:3]]", 504, "upstream_timeout", "timeout"),
    ],
)
def test_upstream_failures_map_and_are_logged(
    gateway: RunningGateway, marker, status, code, row_status
) -> None:
    r = _chat(gateway, f"fail {marker}")
    err = _assert_error(r, status, code)
    assert "sk-fake-secret" not in r.text, "upstream text must not leak keys"
    rows = gateway.rows(
        "SELECT status, http_status, error FROM requests WHERE request_id = {id:UUID}",
        id=r.headers["x-request-id"],
    )
    assert rows[0]["status"] == row_status and rows[0]["http_status"] == status
    assert rows[0]["error"] and "sk-fake-secret" not in rows[0]["error"]
    assert err["message"]


def test_unreachable_upstream_is_502(gateway: RunningGateway) -> None:
    r = _post(
        gateway,
        "/chat/completions",
        '{"model": "dead", "messages": [{"role": "user", "content": "anyone?"}]}',
    )
    _assert_error(r, 502, "upstream_unreachable")


def test_stream_error_before_first_byte_is_a_status(gateway: RunningGateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        list(
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "x [[status:500]]"}],
                stream=True,
            )
        )
    assert info.value.status_code == 502


def test_feedback_for_unknown_or_foreign_request_is_404(gateway: RunningGateway) -> None:
    from tests.support.gateway import OTHER_KEY

    r = _post(
        gateway, "/feedback", '{"request_id": "0190b2a4-0000-7000-8000-000000000000", "score": 1}'
    )
    _assert_error(r, 404, "request_not_found")
    _assert_error(_post(gateway, "/feedback", '{"request_id": "not-a-uuid", "score": 1}'), 404)
    mine = _chat(gateway, "mine").headers["x-request-id"]
    r = _post(gateway, "/feedback", '{"request_id": "' + mine + '", "score": 1}', key=OTHER_KEY)
    _assert_error(r, 404, "request_not_found")
    _assert_error(
        _post(gateway, "/feedback", '{"request_id": "' + mine + '", "score": "good"}'), 400
    )


def test_an_unplanned_exception_still_leaves_one_row(gateway: RunningGateway, monkeypatch) -> None:
    """Whatever breaks inside the request path, the client gets an OpenAI-shaped 500 and the
    request has exactly one row."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug nobody planned for")

    monkeypatch.setattr(gateway.state.limiter, "admit", broken)
    r = _post(gateway, "/chat/completions", CHAT)
    monkeypatch.undo()
    _assert_error(r, 500, "internal_error")
    assert "a bug nobody planned for" not in r.text
    row = gateway.row(r.headers["x-request-id"])
    assert (row["status"], row["http_status"], row["route"]) == ("internal_error", 500, "support")


def test_invalid_response_format_is_a_client_error_with_a_row(gateway: RunningGateway) -> None:
    for bad in ('"json"', "7"):
        r = _post(
            gateway,
            "/chat/completions",
            '{"model": "gpt-4o", "response_format": ' + bad + ", "
            '"messages": [{"role": "user", "content": "hi"}]}',
        )
        assert r.status_code < 500, r.text
        assert gateway.row(r.headers["x-request-id"])["http_status"] == r.status_code


def test_a_deeply_nested_body_is_a_400_and_logging_goes_on(gateway: RunningGateway) -> None:
    """Seen: a ~620-byte request with a field 300 levels deep stopped all logging for good
    (the writer thread died re-serialising it) and was itself a 500 with no row."""
    deep = '{"a":' * 300 + "1" + "}" * 300
    body = CHAT[:-1] + ', "metadata": {"k": "v"}, "extra": ' + deep + "}"
    r = _post(gateway, "/chat/completions", body)
    err = _assert_error(r, 400, "invalid_json")
    assert "nested more than 64 levels" in err["message"]
    assert gateway.row(r.headers["x-request-id"])["status"] == "rejected"
    ok = _post(gateway, "/chat/completions", CHAT)
    assert ok.status_code == 200 and gateway.row(ok.json()["id"])["status"] == "ok"


def test_no_record_stops_the_log_writer(gateway: RunningGateway) -> None:
    """A row that cannot be serialised whole (here handed to the writer directly, past the
    edge's depth check) is written without its bodies, and the writer goes on."""
    from gateway.request_log import RequestRecord

    nested: dict = {}
    cursor = nested
    for _ in range(300):
        cursor["a"] = {}
        cursor = cursor["a"]
    record = RequestRecord(
        request_id="0190a000-0000-7000-8000-000000000001", endpoint="chat.completions"
    )
    record.request, record.app, record.route = {"messages": [nested]}, "shop", "support"
    record.finish("ok", 200)
    gateway.state.writer.submit(record)
    row = gateway.row(record.request_id)
    assert "log finalise failed" in row["error"] and row["messages"] == ""
    assert gateway.state.writer._thread.is_alive()
    ok = _post(gateway, "/chat/completions", CHAT)
    assert gateway.row(ok.json()["id"])["status"] == "ok"


@pytest.mark.parametrize("role_key", ["sk-test-admin", "sk-test-finance", "sk-test-reviewer"])
def test_dashboard_keys_may_not_call_the_model_apis(gateway: RunningGateway, role_key) -> None:
    """Seen: finance, reviewer and admin keys called the models (rows with no app) and
    rated any app's requests, a low score removing them from training."""
    _assert_error(_post(gateway, "/chat/completions", CHAT, key=role_key), 403, "forbidden")
    r = httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {role_key}"})
    _assert_error(r, 403, "forbidden")
    mine = _post(gateway, "/chat/completions", CHAT).json()["id"]
    gateway.row(mine)
    body = '{"request_id": "' + mine + '", "score": 0}'
    _assert_error(_post(gateway, "/feedback", body, key=role_key), 403, "forbidden")
