"""Routing through the running gateway: students, fallbacks, shadows, audits, rate limits,
hot reload under traffic, and the admin endpoints."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.dashboard_data import api_get
from tests.support.gateway import ADMIN_KEY, APP_KEY, RunningGateway
from tests.support.wait import eventually


def _client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=APP_KEY, max_retries=0)


def _ask(gw: RunningGateway, model: str, text: str = "route me", **kw):
    return _client(gw).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def _row(gw: RunningGateway, request_id: str) -> dict:
    return gw.row(request_id)


def _wait_rows(gw: RunningGateway, sql: str, want: int, **params) -> list[dict]:
    return eventually(lambda: gw.rows(sql, **params), 10, lambda rows: len(rows) >= want)


def test_promoted_student_serves_cheapest_and_is_audited(gateway: RunningGateway) -> None:
    resp = _ask(gateway, "promoted", "audit this")
    assert resp.choices[0].message.content == "echo: audit this"
    row = _row(gateway, resp.id)
    assert (row["served_model"], row["served_by"], row["candidate"]) == (
        "student-ok",
        "student",
        "ok",
    )
    assert row["route_reason"] == "promoted: ok"
    assert row["teacher_model"] == "teacher" and row["policy_version"]
    assert row["baseline_cost_usd"] > row["cost_usd"] > 0
    audits = _wait_rows(gateway, "SELECT * FROM audits WHERE request_id = {id:UUID}", 1, id=resp.id)
    assert len(audits) == 1
    assert audits[0]["candidate"] == "ok" and audits[0]["agreement"] == 1.0
    teacher_row = _row(gateway, str(audits[0]["audit_request_id"]))
    assert teacher_row["kind"] == "audit" and teacher_row["parent_id"] == resp.id
    assert teacher_row["served_model"] == "teacher" and teacher_row["baseline_cost_usd"] == 0


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("student-crash", "fallback: student error 500"),
        ("student-hang", "fallback: student timeout"),
    ],
)
def test_student_failure_falls_back_to_teacher(gateway: RunningGateway, model, reason) -> None:
    resp = _ask(gateway, model, "still answered")
    assert resp.choices[0].message.content == "echo: still answered"
    row = _row(gateway, resp.id)
    assert row["status"] == "ok" and row["served_model"] == "teacher"
    assert row["served_by"] == "teacher" and row["route_reason"] == reason


def test_student_failure_falls_back_when_streaming(gateway: RunningGateway) -> None:
    chunks = list(_ask(gateway, "student-crash", "streamed anyway", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: streamed anyway"
    row = _row(gateway, chunks[0].id)
    assert row["route_reason"] == "fallback: student error 500"


def test_a_failing_student_is_marked_unhealthy_where_operators_look(
    gateway: RunningGateway,
) -> None:
    """Users still get the teacher's answer; /healthz, /metrics and the Candidates view say
    which student fails and why, and a student that answers is healthy."""
    for _ in range(3):
        _ask(gateway, "student-crash", "still answered")
    _ask(gateway, "promoted", "fine")
    gateway.state.health_cache.clear()
    root = gateway.base_url.removesuffix("/v1")
    health = httpx.get(root + "/healthz").json()
    broken = health["students"]["student-crash/broken"]
    assert broken["healthy"] is False and "error 500" in broken["last_error"]
    assert broken["unhealthy_since"] and broken["failures_in_a_row"] >= 3
    assert health["students"]["promoted/ok"]["healthy"] is True
    assert health["status"] == "degraded"
    text = httpx.get(root + "/metrics").text
    assert 'flywheel_student_healthy{candidate="broken",route="student-crash"} 0.0' in text
    assert 'flywheel_student_healthy{candidate="ok",route="promoted"} 1.0' in text
    cands = {
        (c["route"], c["candidate"]): c
        for c in api_get(gateway, "/admin/api/candidates").json()["candidates"]
    }
    assert cands[("student-crash", "broken")]["serving"] == "unhealthy"
    assert "error 500" in cands[("student-crash", "broken")]["serving_error"]
    assert cands[("promoted", "ok")]["serving"] == "ok"


def test_student_health_marks_a_missing_model_at_once_and_heals() -> None:
    from prometheus_client import CollectorRegistry, Counter, Gauge

    from gateway.student_health import StudentHealth

    r = CollectorRegistry()
    book = StudentHealth(
        Gauge("h", "h", ["route", "candidate"], registry=r),
        Counter("e", "e", ["route", "candidate"], registry=r),
    )
    book.failed("r", "a", 500, "error 500")
    book.failed("r", "a", 500, "error 500")
    assert not book.unhealthy(), "two failures in a row are not yet a verdict"
    book.failed("r", "b", 404, "error 404: model not loaded")
    assert book.report()["r/b"]["healthy"] is False, "a 404: the model is not loaded"
    book.answered("r", "b")
    book.failed("r", "a", 502, "error 502")
    assert book.report()["r/a"]["healthy"] is False and book.report()["r/b"]["healthy"]
    book.answered("r", "a")
    assert not book.unhealthy() and book.view("r", "a") == {"serving": "ok", "serving_error": ""}


def test_llm_judge_audits_are_recorded_and_a_failing_judge_leaves_its_error(
    gateway: RunningGateway,
) -> None:
    judged = _ask(gateway, "judged", "judge me")
    rows = _wait_rows(gateway, "SELECT * FROM audits WHERE request_id = {id:UUID}", 1, id=judged.id)
    assert rows[0]["metric"] == "llm_judge" and rows[0]["agreement"] == 1.0
    failed = _ask(gateway, "judged", "judge me [[judgefail:503]]")
    assert _row(gateway, failed.id)["served_by"] == "student"
    errors = _wait_rows(
        gateway, "SELECT * FROM audit_failures WHERE request_id = {id:UUID}", 1, id=failed.id
    )
    assert errors[0]["candidate"] == "ok" and "judge error 503" in errors[0]["error"]
    assert not gateway.rows("SELECT * FROM audits WHERE request_id = {id:UUID}", id=failed.id)


def test_teacher_failure_goes_to_backup(gateway: RunningGateway) -> None:
    resp = _ask(gateway, "teacher-down")
    row = _row(gateway, resp.id)
    assert row["served_model"] == "teacher" and row["served_by"] == "fallback"
    assert row["route_reason"].startswith("fallback: teacher dead failed")


def test_shadow_answers_in_background_only(gateway: RunningGateway, upstream) -> None:
    resp = _ask(gateway, "shadowed", "shadow me")
    row = _row(gateway, resp.id)
    assert row["served_model"] == "teacher" and row["kind"] == "request"
    shadows = _wait_rows(
        gateway, "SELECT * FROM requests WHERE parent_id = {id:String}", 1, id=resp.id
    )
    assert len(shadows) == 1
    shadow = shadows[0]
    assert (shadow["kind"], shadow["served_model"], shadow["candidate"]) == (
        "shadow",
        "student-ok",
        "ok",
    )
    assert "echo: shadow me" in shadow["response"] and shadow["baseline_cost_usd"] == 0


def test_a_selective_shadow_records_its_confidence_and_what_it_would_escalate(
    gateway: RunningGateway,
) -> None:
    for text, confidence in (("sure shadow", 0.9), ("unsure shadow [[conf:0.3]]", 0.3)):
        resp = _ask(gateway, "shadowed-selective", text)
        shadow = _wait_rows(
            gateway, "SELECT * FROM requests WHERE parent_id = {id:String}", 1, id=resp.id
        )[0]
        assert shadow["kind"] == "shadow" and abs(shadow["confidence"] - confidence) < 1e-9
        unsure = "would be escalated: confidence 0.30 < 0.60" in shadow["route_reason"]
        assert unsure == (confidence < 0.6), shadow["route_reason"]
        assert "logprobs" not in resp.choices[0].model_dump(exclude_none=True)


def test_rate_limit_per_key_is_429(gateway: RunningGateway) -> None:
    codes = []
    for _ in range(5):
        try:
            _ask(gateway, "limited")
            codes.append(200)
        except openai.RateLimitError as e:
            codes.append(e.status_code)
            assert e.body["code"] == "rate_limit_exceeded"
            limited = e.response.headers["x-request-id"]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    # The limit is checked after routing, and the row says so.
    row = _row(gateway, limited)
    assert (row["status"], row["http_status"], row["route"]) == ("rejected", 429, "limited")
    assert row["route_reason"] == "rejected after routing: rate_limit_exceeded"


def test_admin_endpoints_need_an_admin_key(gateway: RunningGateway) -> None:
    root = gateway.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/admin/policies").status_code == 401
    r = httpx.get(f"{root}/admin/policies", headers={"Authorization": f"Bearer {APP_KEY}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = httpx.get(f"{root}/admin/policies", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["serving_version"]
    assert {"route": "shadowed", "candidate": "ok", "state": "shadow"} in body["candidate_states"]


def test_explain_endpoint(gateway: RunningGateway) -> None:
    root = gateway.base_url.removesuffix("/v1")
    r = httpx.post(
        f"{root}/admin/route/explain",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"model": "promoted", "key": APP_KEY, "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["route"] == "promoted"
    assert out["would_serve"]["model"] == "student-ok"
    assert "cheapest promoted candidate" in out["would_serve"]["why"]
    assert {c["name"]: c["state"] for c in out["candidates"]} == {
        "dear": "promoted",
        "ok": "promoted",
    }
    r = httpx.post(
        f"{root}/admin/route/explain",
        json={"model": "x"},
        headers={"Authorization": f"Bearer {APP_KEY}"},
    )
    assert r.status_code == 403


def test_hot_reload_under_traffic_without_a_failed_request(
    gateway: RunningGateway, hot_policy: Path
) -> None:
    """The `hot` route lives in a policy file of its own (no other test routes through it):
    a valid edit swaps in under traffic, an invalid one is rejected while the previous
    policy serves, and restoring the file brings the first version back."""
    policy_file = next(
        p for p in gateway.state.config.policy_paths() if p.name == "hot.policy.yaml"
    )
    original = policy_file.read_text()
    failures: list[str] = []
    served: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        client = _client(gateway)
        while not stop.is_set():
            try:
                served.append(
                    client.chat.completions.create(
                        model="hot", messages=[{"role": "user", "content": "hot"}]
                    ).id
                )
            except Exception as e:
                failures.append(repr(e))

    def served_after(n: int) -> int:
        return len(eventually(lambda: served, 10, lambda s: len(s) >= n + 10))

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        served_after(0)
        v1 = gateway.state.router.policy_version
        # A valid edit: the `hot` route's teacher becomes `cheap`.
        policy_file.write_text(original.replace("teacher: teacher", "teacher: cheap"))
        v2 = eventually(lambda: gateway.state.router.policy_version, 10, lambda v: v != v1)
        assert v2 != v1
        served_after(len(served))
        # An invalid edit: rejected, the previous policy keeps serving.
        policy_file.write_text(original.replace("teacher: teacher", "teacher: nonexistent"))
        status = eventually(
            lambda: gateway.state.policy_status.get("status"), 10, lambda s: s == "error"
        )
        assert status == "error"
        assert gateway.state.router.policy_version == v2
        metrics = httpx.get(gateway.base_url.replace("/v1", "/metrics")).text
        assert "flywheel_policy_valid 0.0" in metrics
        admin = httpx.get(
            gateway.base_url.replace("/v1", "/admin/policies"),
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ).json()
        assert admin["status"] == "error" and admin["serving_version"] == v2
        assert "unknown model 'nonexistent'" in admin["last_error"]
        assert "hot.policy.yaml:" in admin["last_error"]
        served_after(len(served))
    finally:
        stop.set()
        for w in workers:
            w.join()
        policy_file.write_text(original)
    assert failures == []
    rows = gateway.rows(
        "SELECT policy_version, served_model, count() AS n FROM requests "
        "WHERE request_id IN {ids:Array(UUID)} GROUP BY 1, 2",
        ids=served,
    )
    by_version = {r["policy_version"]: r["served_model"] for r in rows}
    assert by_version == {v1: "teacher", v2: "cheap"}
    # The restored file is the first policy again (same content, same version), serving.
    back = eventually(lambda: gateway.state.router.policy_version, 10, lambda v: v == v1)
    assert back == v1 and gateway.state.policy_status["status"] == "ok"
    again = _ask(gateway, "hot", "after the restore")
    assert _row(gateway, again.id)["served_model"] == "teacher"


def test_student_answer_failing_output_check_goes_to_teacher(gateway: RunningGateway) -> None:
    """The student answers `echo: ...`, not JSON: the request asked for JSON, so the teacher
    answers, and the student's answer is kept for review."""
    for stream in (False, True):
        resp = _ask(
            gateway, "promoted", "give json", response_format={"type": "json_object"}, stream=stream
        )
        request_id = next(iter(resp)).id if stream else resp.id
        if stream:
            list(resp)
        row = (
            _row(gateway, request_id)
            if not stream
            else _wait_rows(
                gateway, "SELECT * FROM requests WHERE request_id = {id:UUID}", 1, id=request_id
            )[0]
        )
        assert row["served_by"] == "teacher"
        assert row["route_reason"] == "fallback: student output failed response_format: not JSON"
        kept = _wait_rows(
            gateway,
            "SELECT kind, served_model FROM requests "
            "WHERE parent_id = {id:String} AND kind = 'output_rejected'",
            1,
            id=request_id,
        )
        assert kept and kept[0]["served_model"] == "student-ok"


def test_provider_new_to_the_process_after_a_reload(
    gateway: RunningGateway, hot_policy: Path, upstream
) -> None:
    """A non-OpenAI model that arrives by hot reload when none existed at start: its client
    library is readied before the policy serves, so the request is an upstream answer or
    error with a row, never a 500 without one."""
    api_base = upstream.base_url.removesuffix("/v1")
    hot_policy.write_text(
        hot_policy.read_text()
        + "  - name: hot-litellm\n"
        + "    match: {models: [hot-litellm]}\n"
        + "    teacher: claude-new\n"
        + "models:\n"
        + "  claude-new:\n"
        + "    model: anthropic/claude-3-5-haiku-20241022\n"
        + f"    api_base: {api_base}\n"
        + '    price: {input_per_million: "0.8", output_per_million: "4"}\n'
    )
    eventually(lambda: gateway.state.router.route_named("hot-litellm"), 60)
    assert gateway.state.router.route_named("hot-litellm") is not None
    r = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "hot-litellm", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {APP_KEY}"},
        timeout=60,
    )
    assert r.status_code != 500, r.text
    assert set(r.json()) <= {"error", "id", "object", "created", "model", "choices", "usage"}
    row = _row(gateway, r.headers["x-request-id"])
    assert row["route"] == "hot-litellm" and row["served_model"] == "claude-new"
    assert "NoneType" not in row["error"]
