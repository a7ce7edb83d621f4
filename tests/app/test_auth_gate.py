"""Every UI route but static bundles, assets and the login page needs a session."""

from __future__ import annotations

import pytest
from dash import Dash

from app.api_client import SESSION_COOKIE
from app.auth import PUBLIC_PREFIXES
from app.config import UISettings
from app.main import create_app
from tests.conftest import free_port


@pytest.fixture(scope="module")
def ui() -> Dash:
    # An API address where nothing listens: any token check fails, as for a bad token.
    return create_app(UISettings(api_url=f"http://127.0.0.1:{free_port()}"))


def _concrete(rule: str) -> str:
    return "/".join("x" if part.startswith("<") else part for part in rule.split("/"))


def test_every_ui_route_refuses_requests_without_a_session(ui: Dash) -> None:
    client = ui.server.test_client()
    rules = [r for r in ui.server.url_map.iter_rules() if r.endpoint != "static"]
    assert any(r.rule.startswith("/_dash-update-component") for r in rules)
    checked = 0
    for rule in rules:
        path = _concrete(rule.rule)
        if path.startswith(PUBLIC_PREFIXES):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for cookies in ({}, {SESSION_COOKIE: "forged"}):
                client._cookies.clear()
                for name, value in cookies.items():
                    client.set_cookie(name, value)
                response = client.open(path, method=method)
                if response.status_code == 303:
                    assert response.headers["Location"].endswith("/login"), (path, method)
                else:
                    assert response.status_code == 401, (path, method, response.status_code)
                checked += 1
    assert checked >= 8


def test_pages_redirect_to_login_and_dash_endpoints_answer_401(ui: Dash) -> None:
    client = ui.server.test_client()
    assert client.get("/").status_code == 303
    assert client.get("/instance?model=1").headers["Location"].endswith("/login")
    assert client.get("/_dash-layout").status_code == 401
    assert client.post("/_dash-update-component", json={}).status_code == 401


def test_login_page_is_public_and_a_bad_token_link_is_refused(ui: Dash) -> None:
    client = ui.server.test_client()
    page = client.get("/login")
    assert page.status_code == 200 and b"Token" in page.data
    bad = client.get("/?token=forged")
    assert bad.status_code == 401 and SESSION_COOKIE not in bad.headers.get("Set-Cookie", "")
    assert client.post("/login", data={"token": "forged"}).status_code == 401


def test_static_assets_are_public(ui: Dash) -> None:
    client = ui.server.test_client()
    assert client.get("/assets/style.css").status_code == 200
