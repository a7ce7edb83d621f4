"""Dash app factory ``create_app(settings)`` and the production entry (waitress).

Pages live in ``app/pages/`` (one module each, ``dash.register_page``); the shell here is the
header, the navigation and the page container. The Flask server gets the auth gate before
anything else, so no page or callback is reachable without a session.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import dash
from dash import Dash, dcc, html

from app import auth
from app.config import UISettings

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
PAGE_MODULES = ("app.pages.home", "app.pages.models", "app.pages.instance",
                "app.pages.dataset", "app.pages.compare")
NAV = (("Projects", "/"), ("Models & data", "/models"), ("Instance", "/instance"),
       ("Dataset", "/dataset"), ("Compare", "/compare"))


def shell() -> html.Div:
    """Header, navigation and page container shared by every page."""
    return html.Div(className="shell", children=[
        dcc.Location(id="url"),
        html.Header(className="topbar", children=[
            html.A("crosslens", href="/", className="brand"),
            html.Nav(className="nav", children=[
                html.A(label, href=href, className="nav-link") for label, href in NAV
            ]),
            html.A("Sign out", href="/logout", className="signout"),
        ]),
        html.Main(dash.page_container, className="page"),
    ])


def create_app(settings: UISettings | None = None) -> Dash:
    settings = settings or UISettings()
    app = Dash(__name__, use_pages=True, pages_folder="", assets_folder=str(ASSETS_DIR),
               title="crosslens", suppress_callback_exceptions=True,
               update_title=None)
    app.server.config["CROSSLENS_API_URL"] = settings.resolved_api_url
    auth.install(app.server, settings.resolved_api_url)
    for module in PAGE_MODULES:
        importlib.import_module(module)
    app.layout = shell
    return app


def main() -> None:
    """Serve the UI with waitress (a production WSGI server; never Flask's debug server)."""
    import waitress

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = UISettings()
    app = create_app(settings)
    waitress.serve(app.server, host=settings.host, port=settings.ui_port, threads=8,
                   ident="crosslens-ui")


if __name__ == "__main__":
    main()
