"""`/dashboard`: the page, its sign-in form and its static files (Chart.js is vendored in
`static/vendor`, so the page works behind a firewall with no CDN).

Invariant: the dashboard page is only sent to a finance, admin or reviewer principal; anyone
else gets the sign-in form or a refusal (403), never the page (which holds no data itself:
every figure comes from `/admin/api/*`, which checks the role on each call).
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from contracts.errors import ApiError
from gateway.dashboard import session
from gateway.state import GatewayState

STATIC = Path(__file__).parent / "static"
# Read once: the pages are templates shipped with the package, not user data.
LOGIN_PAGE = (STATIC / "login.html").read_text()
DASHBOARD_PAGE = (STATIC / "index.html").read_text()


# The pages are never framed, never sniffed, and load only this origin's scripts.
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    # Chart.js draws through data: URLs.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def _login(message: str, status: int) -> HTMLResponse:
    return HTMLResponse(
        LOGIN_PAGE.replace("{{message}}", html.escape(message)),
        status_code=status,
        headers=SECURITY_HEADERS,
    )


async def dashboard(request: Request) -> Response:
    state: GatewayState = request.app.state.gw
    try:
        await state.sessions.principal(request, *session.DASHBOARD_ROLES)
    except ApiError as e:
        # Not signed in: the form, as a normal page; a key of the wrong role: refused.
        return _login(e.message, 403) if e.status == 403 else _login("", 200)
    return HTMLResponse(DASHBOARD_PAGE, headers={"cache-control": "no-store", **SECURITY_HEADERS})


# A sign-in form holds one key: anything larger is refused before it is read (seen: a 400 MB
# unauthenticated post took the process from 81 to 860 MB).
MAX_FORM_BYTES = 8192


async def login(request: Request) -> Response:
    state: GatewayState = request.app.state.gw
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return _login("The sign-in form is larger than a key.", 413)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            return _login("The sign-in form is larger than a key.", 413)
    form = parse_qs(raw.decode("utf-8", "replace"))
    raw_key = (form.get("key") or [""])[0]
    try:
        who, cookie = state.sessions.issue(raw_key)
    except ApiError as e:
        return _login(e.message, e.status)
    if who.role not in session.DASHBOARD_ROLES:
        return _login(
            f"This key's role ({who.role}) may not open the dashboard; "
            "it needs a finance, admin or reviewer key.",
            403,
        )
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        session.COOKIE,
        cookie,
        max_age=session.SESSION_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    state: GatewayState = request.app.state.gw
    cookie = request.cookies.get(session.COOKIE)
    if cookie:
        await state.sessions.revoke(cookie)
    response = RedirectResponse("/dashboard", status_code=303)
    response.delete_cookie(session.COOKIE, path="/")
    return response


def dashboard_routes() -> list[Route | Mount]:
    return [
        Route("/dashboard", dashboard, methods=["GET"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/logout", logout, methods=["GET", "POST"]),
        Mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static"),
    ]
