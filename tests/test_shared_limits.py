"""Limits and budgets shared through a real Redis (Debian's redis-server, started here):
one requests-per-minute limit for two gateway processes, hard budgets that concurrent
requests cannot overshoot, spend seeded from ClickHouse, and a Redis that goes away."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import APP_KEY, RunningGateway, gateway_config, start_gateway
from tests.support.redis_server import running_redis
from tests.support.serve_process import serve_config, start_serve, stop_serve

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with running_redis(tmp_path) as url:
        yield url


@contextlib.contextmanager
def _two_gateways(
    tmp: Path, upstream: Any, redis_url: str, route: dict[str, Any]
) -> Iterator[list[str]]:
    """Two `flywheel serve` processes, each with its own store, sharing one Redis."""
    procs, bases = [], []
    try:
        for i in range(2):
            config, port = serve_config(
                tmp / f"gw{i}", upstream.base_url, redis={"url": redis_url}, routes=[route]
            )
            procs.append(start_serve(config, port))
            bases.append(f"http://127.0.0.1:{port}/v1")
        yield bases
    finally:
        for proc in procs:
            stop_serve(proc)


def _chat(base: str, content: str, key: str = APP_KEY, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{base}/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_two_gateway_processes_enforce_one_limit(tmp_path: Path, upstream, redis_url) -> None:
    route = {
        "name": "support",
        "match": {"models": ["gpt-4o"]},
        "teacher": "teacher",
        "rate_limit": {"requests_per_minute": 10},
    }
    with _two_gateways(tmp_path, upstream, redis_url, route) as bases:
        # 24 requests alternating between the two, well inside the 6 s a refill takes.
        statuses = [_chat(bases[i % 2], f"limit {i}").status_code for i in range(24)]
    assert statuses.count(200) == 10 and statuses.count(429) == 14, statuses


def _budget_gateway(tmp: Path, upstream, redis_url: str | None, **budget: Any) -> RunningGateway:
    extra: dict[str, Any] = {"budgets": [{"name": "support-day", "route": "support", **budget}]}
    if redis_url:
        # A generous timeout: a call that times out fails open, which is not under test here.
        extra["redis"] = {"url": redis_url, "timeout_s": 5}
    return start_gateway(gateway_config(tmp, upstream.base_url, **extra))


def test_a_hard_budget_holds_under_fifty_concurrent_requests(
    tmp_path: Path, upstream, redis_url
) -> None:
    # Each request may cost up to its estimate (prompt + max_tokens at gpt-4o's price):
    # a limit of ~8 estimates lets a handful through and refuses the rest.
    gw = _budget_gateway(tmp_path, upstream, redis_url, period="day", limit_usd="0.0008")
    try:
        with ThreadPoolExecutor(50) as pool:
            answers = list(
                pool.map(lambda i: _chat(gw.base_url, f"budget {i}", max_tokens=8), range(50))
            )
        ok = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code == 429]
        assert ok and refused and len(ok) + len(refused) == 50
        err = refused[0].json()["error"]
        assert err["code"] == "insufficient_quota" and "support-day" in err["message"]
        assert int(refused[0].headers["retry-after"]) > 0
        costs = [Decimal(str(gw.row(a.json()["id"])["cost_usd"])) for a in ok]
        assert sum(costs) <= Decimal("0.0008") + max(costs)
        status = httpx.get(
            gw.base_url.replace("/v1", "/admin/api/budgets"),
            headers={"Authorization": "Bearer sk-test-finance"},
        ).json()["budgets"][0]
        eventually_spent = Decimal(status["spent_usd"])
        assert eventually_spent <= sum(costs) and Decimal(status["held_usd"]) >= 0
    finally:
        gw.stop()
    # A restart with an empty Redis seeds the day's spend from ClickHouse.
    import redis

    redis.Redis.from_url(redis_url).flushall()
    gw = _budget_gateway(tmp_path, upstream, redis_url, period="day", limit_usd="0.0008")
    try:
        status = httpx.get(
            gw.base_url.replace("/v1", "/admin/api/budgets"),
            headers={"Authorization": "Bearer sk-test-finance"},
        ).json()["budgets"][0]
        assert Decimal(status["spent_usd"]) == sum(costs)
    finally:
        gw.stop()


def test_a_soft_budget_flags_rows_without_redis(tmp_path: Path, upstream) -> None:
    gw = _budget_gateway(tmp_path, upstream, None, limit_usd="0.00001", kind="soft")
    try:
        first, second = _chat(gw.base_url, "soft 1"), _chat(gw.base_url, "soft 2")
        assert first.status_code == second.status_code == 200
        flagged = gw.row(second.json()["id"])["budgets_over"]
        assert flagged == ["support-day"]
        metrics = httpx.get(gw.base_url.replace("/v1", "/metrics")).text
        assert 'flywheel_budget_exceeded_total{budget="support-day",kind="soft"}' in metrics
    finally:
        gw.stop()


def test_redis_down_fails_open_or_closed_as_each_route_says(
    tmp_path: Path, upstream, redis_url
) -> None:
    config = gateway_config(tmp_path, upstream.base_url, redis={"url": redis_url, "timeout_s": 0.2})
    gw = start_gateway(config)
    try:
        assert _chat(gw.base_url, "redis up").status_code == 200
        import redis

        redis.Redis.from_url(redis_url).shutdown(nosave=True)
        time.sleep(0.2)
        body = {"model": "limited", "messages": [{"role": "user", "content": "redis down"}]}
        headers = {"Authorization": f"Bearer {APP_KEY}"}
        r = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers)
        assert r.status_code == 200, "a rate-limited route fails open by default"
        gw.state.health_cache.clear()
        health = httpx.get(gw.base_url.replace("/v1", "/healthz")).json()
        assert health["redis"]["ok"] is False and health["status"] == "degraded"
        assert "flywheel_redis_up 0.0" in httpx.get(gw.base_url.replace("/v1", "/metrics")).text
        strict = gw.state.router.route_named("limited")
        assert strict is not None and strict.rate_limit is not None
        strict.rate_limit.when_redis_down = "closed"
        r = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers)
        assert r.status_code == 503 and r.json()["error"]["code"] == "rate_limit_unavailable"
    finally:
        gw.stop()


def test_two_gateway_processes_share_one_response_cache(
    tmp_path: Path, upstream, redis_url
) -> None:
    route = {
        "name": "support",
        "match": {"models": ["gpt-4o"]},
        "teacher": "teacher",
        "cache": {"ttl_s": 60, "semantic": {"threshold": 0.8}},
        "audit": {"share": 0},  # no audits of semantic hits: the upstream calls are the users'
    }
    with _two_gateways(tmp_path, upstream, redis_url, route) as bases:
        first = _chat(bases[0], "shared cache 8501", temperature=0)
        time.sleep(0.3)  # the entry is written just after the answer
        second = _chat(bases[1], "shared cache 8501", temperature=0)
        # Semantic matching is shared too: a rewording asked of the other process hits.
        _chat(bases[0], "how do I close my savings account 8502", temperature=0)
        time.sleep(0.3)
        near = _chat(bases[1], "How do I close my savings account? 8502", temperature=0)
    assert first.headers["x-flywheel-served-by"] == "teacher"
    assert second.headers["x-flywheel-served-by"] == "cache"
    assert second.json()["choices"] == first.json()["choices"]
    calls = [b for b in upstream.fake.requests if "shared cache 8501" in str(b.get("messages"))]
    assert len(calls) == 1
    assert near.headers["x-flywheel-served-by"] == "cache"
    assert near.json()["choices"][0]["message"]["content"].startswith("echo: how do I close")
    calls = [b for b in upstream.fake.requests if "8502" in str(b.get("messages"))]
    assert len(calls) == 1


def test_budgets_in_a_policy_file_are_hot_reloaded(gateway: RunningGateway, hot_policy) -> None:
    """A budget added to a policy file applies to the next request, without a restart."""
    body = {"model": "hot", "messages": [{"role": "user", "content": "budgeted"}]}
    headers = {"Authorization": f"Bearer {APP_KEY}"}
    assert (
        httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers).status_code
        == 200
    )
    version = gateway.state.router.policy_version
    hot_policy.write_text(
        hot_policy.read_text()
        + '\nbudgets:\n  - {name: hot-tiny, route: hot, period: day, limit_usd: "0.000001"}\n'
    )
    from tests.support.wait import eventually

    eventually(lambda: gateway.state.router.policy_version, 10, lambda v: v != version)
    r = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers)
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    assert "hot-tiny" in r.json()["error"]["message"]


def test_a_sign_out_reaches_every_process_through_redis(redis_url: str) -> None:
    import asyncio

    from gateway.dashboard.revocations import RedisRevocations
    from gateway.redis_link import RedisLink

    async def check() -> tuple[bool, bool]:
        here = RedisRevocations(RedisLink(redis_url, 0.5))
        there = RedisRevocations(RedisLink(redis_url, 0.5))
        await here.add("nonce-1", int(time.time()) + 60)
        return await there.contains("nonce-1"), await there.contains("nonce-2")

    assert asyncio.run(check()) == (True, False)
