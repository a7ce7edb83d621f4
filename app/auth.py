"""Deny-by-default gate for every UI route, and the login/logout flow.

``/?token=...`` (the link ``crosslens serve`` prints) is checked with the API, stored in an
HttpOnly, SameSite=Strict cookie, and the browser is redirected to the same URL without the
token, so links people share never carry it. Only Dash's static bundles, ``/assets/`` and
the login page are public; anything else without a valid session redirects to ``/login``
(pages) or answers 401 (Dash's JSON endpoints).
"""

from __future__ import annotations

import html
import time
from urllib.parse import urlencode

import flask

from app.api_client import SESSION_COOKIE, ApiClient, ApiError

PUBLIC_PREFIXES = ("/_dash-component-suites/", "/assets/", "/login", "/_favicon.ico")
VALIDATION_TTL_S = 15.0  # how long a checked session is trusted before asking the API again

_LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>crosslens — sign in</title><link rel="stylesheet" href="/assets/style.css"></head>
<body class="login-page"><main class="login-card"><h1>crosslens</h1>
<p>Open the login link printed by <code>crosslens serve</code> (or ask an admin for one made
with <code>crosslens users add</code>), or paste your token here.</p>
{error}<form method="post" action="/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" required>
<button type="submit">Sign in</button></form></main></body></html>"""


def install(server: flask.Flask, api_url: str) -> None:
    """Attach the gate and the login routes to the Dash app's Flask server."""
    validated: dict[str, float] = {}

    def is_valid(token: str | None) -> bool:
        if not token:
            return False
        if validated.get(token, 0.0) > time.monotonic():
            return True
        try:
            ApiClient(api_url, token, timeout=10).me()
        except ApiError:
            validated.pop(token, None)
            return False
        validated[token] = time.monotonic() + VALIDATION_TTL_S
        return True

    def with_session(response: flask.Response, token: str) -> flask.Response:
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict",
                            secure=flask.request.is_secure, path="/")
        return response

    def login_page(error: str = "", status: int = 200) -> flask.Response:
        message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
        return flask.Response(_LOGIN_PAGE.format(error=message), status=status,
                              mimetype="text/html")

    def gate() -> flask.Response | None:
        path = flask.request.path
        token_in_url = flask.request.args.get("token")
        if token_in_url is not None:
            if not is_valid(token_in_url):
                return login_page("That login link is not valid (revoked or mistyped).", 401)
            query = {k: v for k, v in flask.request.args.items() if k != "token"}
            target = path + (f"?{urlencode(query)}" if query else "")
            return with_session(flask.redirect(target, code=303), token_in_url)
        if path.startswith(PUBLIC_PREFIXES):
            return None
        if is_valid(flask.request.cookies.get(SESSION_COOKIE)):
            return None
        if path.startswith("/_dash-") or flask.request.method != "GET":
            return flask.Response('{"detail": "not signed in"}', status=401,
                                  mimetype="application/json")
        return flask.redirect("/login", code=303)

    # First in line: Dash registers its own before_request (page routing) on the same server.
    server.before_request_funcs.setdefault(None, []).insert(0, gate)

    @server.route("/login", methods=["GET", "POST"])
    def login() -> flask.Response:
        if flask.request.method == "GET":
            return login_page()
        token = (flask.request.form.get("token") or "").strip()
        if not is_valid(token):
            return login_page("That token is not valid.", 401)
        return with_session(flask.redirect("/", code=303), token)

    @server.route("/logout", methods=["POST", "GET"])
    def logout() -> flask.Response:
        token = flask.request.cookies.get(SESSION_COOKIE)
        validated.pop(token or "", None)
        response = flask.redirect("/login", code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
