"""Who may read the dashboard and its JSON, and the admin views (routes, candidates, history,
lineage)."""

from __future__ import annotations

import httpx

from distiller.events import record_event
from tests.support.dashboard_data import api_get
from tests.support.gateway import (
    ADMIN_KEY,
    APP_KEY,
    FINANCE_KEY,
    OTHER_KEY,
    REVIEWER_KEY,
    RunningGateway,
)


def test_roles_guard_the_dashboard_and_its_json(gateway: RunningGateway) -> None:
    for key in (APP_KEY, OTHER_KEY):
        for path in ("/admin/api/finance", "/admin/api/review", "/admin/api/candidates"):
            r = api_get(gateway, path, key=key)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", path
        page = api_get(gateway, "/dashboard", key=key)
        assert page.status_code == 403 and "app.js" not in page.text
    assert api_get(gateway, "/admin/api/finance", key="sk-wrong").status_code == 401
    base = gateway.base_url.removesuffix("/v1")
    assert httpx.get(f"{base}/admin/api/finance").status_code == 401
    form = httpx.get(f"{base}/dashboard")
    assert form.status_code == 200 and 'name="key"' in form.text and "app.js" not in form.text

    assert api_get(gateway, "/admin/api/finance", key=FINANCE_KEY).status_code == 200
    assert api_get(gateway, "/admin/api/routes", key=FINANCE_KEY).status_code == 403
    assert api_get(gateway, "/admin/api/review", key=FINANCE_KEY).status_code == 403
    assert api_get(gateway, "/admin/api/review", key=REVIEWER_KEY).status_code == 200
    assert api_get(gateway, "/admin/api/finance", key=REVIEWER_KEY).status_code == 403

    # The sign-in form: an app key is refused, a finance key gets a signed session cookie.
    with httpx.Client(base_url=base) as client:
        refused = client.post("/dashboard/login", data={"key": APP_KEY})
        assert refused.status_code == 403 and "flywheel_session" not in client.cookies
        ok = client.post("/dashboard/login", data={"key": FINANCE_KEY})
        assert ok.status_code == 303
        cookie = client.cookies["flywheel_session"]
        assert FINANCE_KEY not in cookie
        assert client.get("/admin/api/finance").status_code == 200
        assert client.get("/dashboard").status_code == 200
        _key_id, expiry, sig = cookie.rsplit(".", 2)
        client.cookies.set("flywheel_session", f"admin.{expiry}.{sig}")
        assert client.get("/admin/api/routes").status_code == 401, "a forged cookie"


def test_admin_views(gateway: RunningGateway) -> None:
    routes = api_get(gateway, "/admin/api/routes").json()
    assert "promoted" in {r["route"] for r in routes["routes"]}
    cands = api_get(gateway, "/admin/api/candidates").json()["candidates"]
    assert {"route": "promoted", "candidate": "ok", "state": "promoted"}.items() <= {
        k: v
        for c in cands
        if (c["route"], c["candidate"]) == ("promoted", "ok")
        for k, v in c.items()
    }.items()
    r = api_get(gateway, "/admin/api/lineage", route="promoted")
    assert r.status_code == 400
    lineage = api_get(gateway, "/admin/api/lineage", route="promoted", candidate="ok").json()
    assert set(lineage) >= {"runs", "datasets", "makeup", "items"}
    record_event(
        gateway.state.store,
        "promoted",
        "ok",
        "rollback",
        "audit agreement 0.71 < 0.90 over the last 200 audits",
        {"agreement": 0.71},
        from_state="promoted",
        to_state="rolled_back",
    )
    history = api_get(gateway, "/admin/api/history", route="promoted").json()["events"]
    assert history[0]["to_state"] == "rolled_back" and "0.71" in history[0]["reason"]
    as_csv = api_get(gateway, "/admin/api/history", route="promoted", format="csv", table="events")
    assert as_csv.status_code == 200 and "rolled_back" in as_csv.text


def test_the_sign_in_form_is_bounded_before_it_is_read(gateway: RunningGateway) -> None:
    """Seen: a 400 MB body to the sign-in form took the process from 81 to 860 MB."""
    import httpx

    url = gateway.base_url.removesuffix("/v1") + "/dashboard/login"
    r = httpx.post(url, content=b"key=" + b"x" * 100_000, timeout=30)
    assert r.status_code == 413

    def chunks():  # no content-length: the stream is cut once it passes the bound
        for _ in range(50):
            yield b"x" * 10_000

    r = httpx.post(url, content=chunks(), timeout=30)
    assert r.status_code == 413


def test_sessions_need_the_server_secret_and_end_at_sign_out(gateway: RunningGateway) -> None:
    """Seen: a cookie forged from a key's SHA-256 (which a config may hold in plain text)
    with a year-2100 expiry got 200 on the admin API, and a cookie worked after sign-out."""
    import hashlib
    import hmac

    base = gateway.base_url.removesuffix("/v1")
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    expiry = 4_102_444_800  # 2100-01-01
    for forged in (
        f"admin.{expiry}."
        + hmac.new(digest.encode(), f"admin.{expiry}".encode(), "sha256").hexdigest(),
        f"admin.{expiry}.00.{hmac.new(digest.encode(), b'x', 'sha256').hexdigest()}",
    ):
        r = httpx.get(f"{base}/admin/api/routes", cookies={"flywheel_session": forged})
        assert r.status_code == 401, forged
    with httpx.Client(base_url=base) as client:
        assert client.post("/dashboard/login", data={"key": ADMIN_KEY}).status_code == 303
        cookie = client.cookies["flywheel_session"]
        assert client.get("/admin/api/routes").status_code == 200
        client.post("/dashboard/logout")
    replayed = httpx.get(f"{base}/admin/api/routes", cookies={"flywheel_session": cookie})
    assert replayed.status_code == 401, "a cookie kept after sign-out"
    # Another worker or replica (same secret, same store, its own memory) refuses it too.
    import asyncio

    from gateway.dashboard.revocations import StoreRevocations
    from gateway.dashboard.session import Sessions, load_secret

    config = gateway.state.config
    other = Sessions(
        gateway.state.keys,
        load_secret(config.server.session_secret, config.data_dir),
        StoreRevocations(gateway.state.store),
    )
    with httpx.Client(base_url=base) as client:
        client.post("/dashboard/login", data={"key": ADMIN_KEY})
        live = client.cookies["flywheel_session"]
    assert asyncio.run(other.check(live)) is not None, "a live cookie works on every worker"
    assert asyncio.run(other.check(cookie)) is None, "a signed-out one on none"
    secret = gateway.state.config.data_dir / "session.key"
    assert secret.stat().st_mode & 0o777 == 0o600
