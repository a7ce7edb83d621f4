"""Home: who is signed in, the projects they can open, and a form to start a new one."""

from __future__ import annotations

import dash
from dash import Input, Output, State, callback, dcc, html

from app.api_client import ApiError, client
from app.components import alert

DESCRIPTION_PREVIEW = 220


def _project_item(project: dict) -> html.Li:
    description = project.get("description") or ""
    if len(description) > DESCRIPTION_PREVIEW:
        description = description[:DESCRIPTION_PREVIEW].rsplit(" ", 1)[0] + " …"
    pid = project["id"]
    return html.Li(className="project", children=[
        html.Div(className="project-main", children=[
            html.Div([html.Span(project["name"], className="project-name"),
                      html.Span(project["role"], className="badge")]),
            html.P(description, className="muted project-description") if description else None,
        ]),
        html.Div(className="row-actions", children=[
            dcc.Link("Models & data", href=f"/models?project={pid}",
                     className="btn btn-small btn-quiet"),
            dcc.Link("Explore instances", href=f"/instance?project={pid}",
                     className="btn btn-small"),
        ]),
    ])


def _project_list(projects: list[dict]) -> html.Ul | html.P:
    if not projects:
        return html.P("No projects yet. Create one below, or ask an admin to add you to one.",
                      className="muted")
    return html.Ul([_project_item(p) for p in projects], className="project-list")


def layout(**_query: str) -> html.Div:
    try:
        with client() as api:
            me = api.me()
            projects = api.projects()
    except ApiError as exc:
        return html.Div(className="card error", role="alert", children=exc.message)
    return html.Div(id="home", children=[
        html.H1("Projects"),
        html.P(f"Signed in as {me['name']}" + (" (global admin)" if me["is_admin"] else ""),
               id="home-user"),
        html.Section(className="card", children=[
            dcc.Loading(html.Div(_project_list(projects), id="home-projects"), type="circle")]),
        html.Section(className="card", children=[
            html.H2("New project"),
            html.P("You become its admin and can add teammates with "
                   "`crosslens users add NAME --project P --role viewer|editor|admin`.",
                   className="muted"),
            html.Div(className="control-row", children=[
                html.Div(className="field", children=[
                    html.Label("Name", className="label", htmlFor="home-new-name"),
                    dcc.Input(id="home-new-name", type="text", maxLength=64,
                              className="text-input", placeholder="e.g. chest-xray-reports")]),
                html.Div(className="field", children=[
                    html.Label("Description", className="label", htmlFor="home-new-description"),
                    dcc.Input(id="home-new-description", type="text", maxLength=500,
                              className="text-input", placeholder="what the team studies")]),
                html.Button("Create project", id="home-create", className="btn"),
            ]),
            html.Div(id="home-create-msg"),
        ]),
    ])


@callback(Output("home-projects", "children"), Output("home-create-msg", "children"),
          Input("home-create", "n_clicks"), State("home-new-name", "value"),
          State("home-new-description", "value"), prevent_initial_call=True)
def create_project(_clicks, name, description):
    if not (name or "").strip():
        return dash.no_update, alert("Give the project a name.", kind="info")
    try:
        with client() as api:
            created = api.create_project(name.strip(), (description or "").strip())
            projects = api.projects()
    except ApiError as exc:
        return dash.no_update, alert(exc.message)
    return _project_list(projects), alert(f"Created project “{created['name']}”.", kind="info")


# Registered after ``layout`` exists: page modules are imported by ``create_app``, not
# discovered from a pages folder, so Dash needs the layout passed explicitly.
dash.register_page(__name__, path="/", title="crosslens — projects", name="Projects",
                   layout=layout)
