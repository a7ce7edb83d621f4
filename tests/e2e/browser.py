"""Shared pieces of the browser tests: a server without the demo catalogue, login, waiting,
full-page screenshots."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServers, start_servers, stop_servers


def serve_without_demos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServers]:
    """A real ``crosslens serve`` that skips the demo catalogue (saves half a minute): the
    modules using it upload what they need themselves."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CROSSLENS_REGISTER_DEMOS", "false")
        servers = start_servers(tmp_path_factory.mktemp("crosslens-data"))
    yield servers
    stop_servers(servers)


def login(dash_br, servers: LiveServers) -> None:
    dash_br.driver.get(servers.login_link)
    dash_br.server_url = servers.ui_url  # after the cookie is set: waits for the Dash app


def wait_until(condition: Callable[[], object], timeout: float, what: str = "",
               poll_s: float = 0.1) -> object:
    """The first truthy value of ``condition()``; exceptions count as not yet (the DOM changes
    under us while Dash re-renders) and the last one is reported on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what or condition}: {last_error}")


def full_page_screenshot(dash_br, path: Path) -> None:
    """Grow the window to the page height, save the screenshot, restore the window."""
    driver = dash_br.driver
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(height + 120, 1000), 5000))
    time.sleep(0.5)
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
