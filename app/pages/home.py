"""Home: who is signed in and the projects they can open."""

from __future__ import annotations

import dash
from dash import html

from app.api_client import ApiError, client


def layout(**_query: str) -> html.Div:
    try:
        me = client().me()
    except ApiError as exc:
        return html.Div(className="card error", role="alert", children=exc.message)
    projects = me.get("projects", [])
    rows = [html.Li(className="project", children=[
        html.Span(p["name"], className="project-name"),
        html.Span(p["role"], className="badge"),
    ]) for p in projects]
    return html.Div(id="home", children=[
        html.H1("Projects"),
        html.P(f"Signed in as {me['name']}" + (" (global admin)" if me["is_admin"] else ""),
               id="home-user"),
        html.Ul(rows, className="project-list") if rows else html.P(
            "No projects yet. Upload a model and a dataset, or ask an admin to add you to one.",
            className="muted"),
    ])


# Registered after ``layout`` exists: page modules are imported by ``create_app``, not
# discovered from a pages folder, so Dash needs the layout passed explicitly.
dash.register_page(__name__, path="/", title="crosslens — projects", name="Projects",
                   layout=layout)
