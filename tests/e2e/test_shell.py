"""End to end: the real ``crosslens serve`` (API + UI processes) in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServers

pytestmark = pytest.mark.browser


def test_serve_prints_a_login_link_and_health_answers(live_servers: LiveServers) -> None:
    assert live_servers.login_link.startswith(live_servers.ui_url + "/?token=")
    assert httpx.get(f"{live_servers.api_url}/health").json() == {"status": "ok"}
    me = httpx.get(f"{live_servers.api_url}/api/v1/auth/me",
                   headers={"Authorization": f"Bearer {live_servers.admin_token}"}).json()
    assert me["name"] == "admin" and me["is_admin"]


def test_login_link_sets_an_httponly_cookie_and_drops_the_token(
        live_servers: LiveServers) -> None:
    response = httpx.get(live_servers.login_link, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_shell_renders_after_login_in_headless_chromium(
        dash_br, live_servers: LiveServers, artifacts_dir: Path) -> None:
    dash_br.driver.get(live_servers.ui_url + "/")
    assert "/login" in dash_br.driver.current_url  # no session: the login page

    dash_br.driver.get(live_servers.login_link)
    dash_br.server_url = live_servers.ui_url  # waits for the Dash app to load
    dash_br.wait_for_text_to_equal("h1", "Projects", timeout=30)
    assert "token=" not in dash_br.driver.current_url
    dash_br.wait_for_contains_text("#home-user", "Signed in as admin", timeout=10)
    nav = [a.text for a in dash_br.find_elements(".nav-link")]
    assert nav[:2] == ["Projects", "Models & data"]
    dash_br.driver.save_screenshot(str(artifacts_dir / "home.png"))
    assert dash_br.get_logs() in ([], None)
