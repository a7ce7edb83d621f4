"""Compare models: rank a project's models by how well their interactions match the data's.

Submits one ``model_selection`` job for the chosen dataset and models (an identical earlier
request returns its job at once), follows its progress, then shows the ranking (distance,
accuracy) and each model's PID profile next to the data's. State lives in the URL query.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import (
    ALL,
    Input,
    Output,
    State,
    callback,
    clientside_callback,
    ctx,
    dash_table,
    dcc,
    html,
)

from app.api_client import ApiError, client
from app.components import alert, gather
from app.components.jobs import (
    VIEWER_MESSAGE,
    all_final,
    can_run,
    existing_jobs,
    model_ids,
    progress_row,
    project_role,
    ranking_rows,
    refresh,
)
from app.components.urlstate import REPLACE_STATE_JS, as_int, pick, query_string
from app.figures.dataset import DISTANCE_EXPLANATION, ranking_figure
from app.figures.style import FONT

KIND = "model_selection"
POLL_MS = 700
GRAPH_CONFIG = {"displaylogo": False, "displayModeBar": "hover"}


def _field(label: str, control: Any) -> html.Div:
    return html.Div(className="field", children=[html.Label(label, className="label"), control])


def layout(**query: str) -> html.Div:
    try:
        with client() as api:
            projects = api.projects()
            project = pick(as_int(query.get("project")), [p["id"] for p in projects])
            found = gather(models=lambda: api.models(project),
                           datasets=lambda: api.datasets(project)) if project else {
                "models": [], "datasets": []}
    except ApiError as exc:
        return html.Div(id="compare-page", children=[html.H1("Compare models"),
                                                     alert(exc.message)])
    if project is None:
        return html.Div(id="compare-page", children=[html.H1("Compare models"), alert(
            "You are not a member of any project yet. Ask an admin to add you to one.",
            kind="info")])
    models, datasets = found["models"], found["datasets"]
    known = [m["id"] for m in models]
    chosen = [i for i in model_ids(query.get("models")) if i in known] or known[:4]
    role = project_role(projects, project)
    return html.Div(id="compare-page", children=[
        dcc.Store(id="cmp-jobs"), dcc.Store(id="cmp-query"), dcc.Store(id="cmp-query-applied"),
        dcc.Interval(id="cmp-poll", interval=POLL_MS, disabled=True),
        html.Div(className="page-head", children=[
            html.H1("Compare models"),
            html.P("Which model combines the modalities the way the data needs?",
                   className="muted")]),
        html.Section(className="card controls", children=[
            html.Div(className="control-row", children=[
                _field("Project", dcc.Dropdown(
                    id="cmp-project", clearable=False, value=project,
                    options=[{"label": p["name"], "value": p["id"]} for p in projects])),
                _field("Dataset", dcc.Dropdown(
                    id="cmp-dataset", clearable=False,
                    value=pick(as_int(query.get("dataset")), [d["id"] for d in datasets]),
                    placeholder="no dataset in this project yet",
                    options=[{"label": f"{d['name']} ({d['n']} instances)", "value": d["id"]}
                             for d in datasets])),
                _field("Models (2 to 16)", dcc.Dropdown(
                    id="cmp-models", multi=True, value=chosen,
                    options=[{"label": m["name"], "value": m["id"]} for m in models])),
                html.Button("Compare", id="cmp-run", className="btn",
                            disabled=not can_run(role),
                            title="" if can_run(role) else VIEWER_MESSAGE),
            ]),
            html.Div(None if can_run(role) else alert(VIEWER_MESSAGE, kind="info")),
            html.Div(id="cmp-msg"),
            html.Div(id="cmp-progress", className="job-list"),
        ]),
        html.Section(className="card", children=[
            html.H2("Ranking"), html.P(DISTANCE_EXPLANATION, className="method-note"),
            html.Div(id="cmp-result")]),
    ])


@callback(Output("cmp-dataset", "options"), Output("cmp-dataset", "value"),
          Output("cmp-models", "options"), Output("cmp-models", "value"),
          Input("cmp-project", "value"), State("cmp-dataset", "value"),
          prevent_initial_call=True)
def change_project(project_id, dataset_id):
    try:
        with client() as api:
            found = gather(models=lambda: api.models(project_id),
                           datasets=lambda: api.datasets(project_id))
    except ApiError:
        return [], None, [], []
    models, datasets = found["models"], found["datasets"]
    return ([{"label": f"{d['name']} ({d['n']} instances)", "value": d["id"]}
             for d in datasets], pick(dataset_id, [d["id"] for d in datasets]),
            [{"label": m["name"], "value": m["id"]} for m in models],
            [m["id"] for m in models][:4])


@callback(Output("cmp-query", "data"), Input("cmp-project", "value"),
          Input("cmp-dataset", "value"), Input("cmp-models", "value"))
def build_query(project, dataset, models) -> str:
    return query_string({"project": project, "dataset": dataset, "models": models})


clientside_callback(REPLACE_STATE_JS, Output("cmp-query-applied", "data"),
                    Input("cmp-query", "data"))


@callback(Output("cmp-jobs", "data"), Output("cmp-poll", "disabled"),
          Output("cmp-msg", "children"),
          Input("cmp-dataset", "value"), Input("cmp-models", "value"),
          Input("cmp-run", "n_clicks"), Input("cmp-poll", "n_intervals"),
          Input({"type": "cmp-cancel", "kind": ALL}, "n_clicks"),
          State("cmp-project", "value"), State("cmp-jobs", "data"))
def follow_job(dataset_id, models, _run, _tick, _cancel, project_id, jobs):
    trigger = ctx.triggered_id
    ids = model_ids(models)
    if project_id is None or dataset_id is None or not 2 <= len(ids) <= 16:
        return {}, True, alert("Choose a dataset and 2 to 16 models.", kind="info")
    params = {"dataset_id": dataset_id, "model_ids": ids}
    try:
        with client() as api:
            if trigger == "cmp-run":
                jobs = {KIND: api.submit_job(project_id, KIND, params)}
            elif isinstance(trigger, dict):
                if not (any(t["value"] for t in ctx.triggered) and jobs):
                    return dash.no_update, dash.no_update, dash.no_update
                jobs = {KIND: api.cancel_job(jobs[KIND]["id"])}
            elif trigger == "cmp-poll" and jobs:
                jobs = refresh(api, jobs)
            else:
                jobs = existing_jobs(api.jobs(project_id), {KIND: params})
    except ApiError as exc:
        return dash.no_update, True, alert(exc.message)
    return jobs, all_final(jobs), None


@callback(Output("cmp-progress", "children"), Input("cmp-jobs", "data"),
          State("cmp-run", "disabled"))
def draw_progress(jobs, viewer):
    return progress_row("Model selection", (jobs or {}).get(KIND), cancellable=not viewer,
                        cancel_id={"type": "cmp-cancel", "kind": KIND})


@callback(Output("cmp-result", "children"), Input("cmp-jobs", "data"))
def draw_ranking(jobs):
    job = (jobs or {}).get(KIND)
    if job is None:
        return html.P("Not compared yet: press “Compare”.", className="muted")
    if job["state"] == "failed":
        return alert(f"The comparison failed: {job.get('error') or job.get('message')}")
    if job["state"] == "cancelled":
        return alert("The comparison was cancelled; press “Compare” again.", kind="warning")
    if job["state"] != "succeeded":
        return html.P(f"Running… {float(job.get('progress') or 0):.0%}", className="muted")
    try:
        with client() as api:
            result = api.job_result(job["id"])
    except ApiError as exc:
        return alert(exc.message)
    best = result["ranking"][0]["name"] if result["ranking"] else None
    table = dash_table.DataTable(
        id="cmp-table", data=ranking_rows(result),
        columns=[{"name": "rank", "id": "rank"}, {"name": "model", "id": "model"},
                 {"name": "distance to the data (0 = same profile)", "id": "distance"},
                 {"name": "accuracy", "id": "accuracy"}],
        style_cell={"fontFamily": FONT["family"], "fontSize": "0.95rem", "padding": "0.4rem",
                    "textAlign": "left"},
        style_header={"fontWeight": 600, "backgroundColor": "#f3f4f6"})
    graphs = [dcc.Graph(id=f"cmp-graph-{k}", figure=ranking_figure(result, pair),
                        config=GRAPH_CONFIG) for k, pair in enumerate(result.get("data") or {})]
    return [html.P(f"Best match: {best}.", className="verdict") if best else None, table,
            *graphs]


dash.register_page(__name__, path="/compare", title="crosslens — compare", name="Compare",
                   layout=layout)
