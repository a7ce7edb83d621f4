"""Dataset summary: how a model uses and combines its modalities over a whole dataset.

"Run summary" submits seven analyses as backend jobs (PID of the data and of the model, EMAP
gap, interaction types, modality importance, robustness, instance map); an identical earlier request
returns its job at once, so finished results show without waiting. Progress bars follow the
jobs (polled while any runs) with a cancel button each. Viewers see results, cannot run.
State (project, model, dataset) lives in the URL query; clicking a point of the instance
map opens that instance on the Instance page with the same project, model and dataset.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, clientside_callback, ctx, dcc, html

from app.api_client import ApiError, client
from app.components import alert, gather
from app.components.jobs import (
    ANALYSES,
    VIEWER_MESSAGE,
    all_final,
    can_run,
    clicked_instance_href,
    existing_jobs,
    progress_row,
    project_role,
    refresh,
    requests_for,
)
from app.components.urlstate import REPLACE_STATE_JS, as_int, pick, query_string
from app.figures.dataset import (
    EMAP_EXPLANATION,
    EMBEDDING_EXPLANATION,
    emap_figure,
    embedding_figure,
    importance_figure,
    pid_figure,
    robustness_figure,
    types_figure,
)

POLL_MS = 700
GRAPH_CONFIG = {"displaylogo": False, "displayModeBar": "hover",
                "toImageButtonOptions": {"scale": 2}}


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
        return html.Div(id="dataset-page", children=[html.H1("Dataset"), alert(exc.message)])
    if project is None:
        return html.Div(id="dataset-page", children=[html.H1("Dataset"), alert(
            "You are not a member of any project yet. Ask an admin to add you to one.",
            kind="info")])
    models, datasets = found["models"], found["datasets"]
    role = project_role(projects, project)
    return html.Div(id="dataset-page", children=[
        dcc.Store(id="ds-jobs"), dcc.Store(id="ds-query"), dcc.Store(id="ds-query-applied"),
        dcc.Store(id="ds-shown"), dcc.Location(id="ds-go", refresh="callback-nav"),
        dcc.Interval(id="ds-poll", interval=POLL_MS, disabled=True),
        html.Div(className="page-head", children=[
            html.H1("Dataset"),
            html.P("How the model uses and combines its modalities over the whole dataset.",
                   className="muted")]),
        html.Section(className="card controls", children=[
            html.Div(className="control-row", children=[
                _field("Project", dcc.Dropdown(
                    id="ds-project", clearable=False, value=project,
                    options=[{"label": p["name"], "value": p["id"]} for p in projects])),
                _field("Model", dcc.Dropdown(
                    id="ds-model", clearable=False,
                    value=pick(as_int(query.get("model")), [m["id"] for m in models]),
                    placeholder="no model in this project yet",
                    options=[{"label": m["name"], "value": m["id"]} for m in models])),
                _field("Dataset", dcc.Dropdown(
                    id="ds-dataset", clearable=False,
                    value=pick(as_int(query.get("dataset")), [d["id"] for d in datasets]),
                    placeholder="no dataset in this project yet",
                    options=[{"label": f"{d['name']} ({d['n']} instances)", "value": d["id"]}
                             for d in datasets])),
                html.Button("Run summary", id="ds-run", className="btn",
                            disabled=not can_run(role),
                            title="" if can_run(role) else VIEWER_MESSAGE),
            ]),
            html.Div(id="ds-role-note", children=None if can_run(role) else alert(
                VIEWER_MESSAGE, kind="info")),
            html.Div(id="ds-msg"),
            html.Div(id="ds-progress", className="job-list"),
        ]),
        html.Div(className="summary-grid", children=[
            html.Section(className="card", children=[
                html.H2("Partial information decomposition"),
                html.P("How much each modality tells about the label alone (unique), both "
                       "tell (redundancy) or only tell together (synergy), in bits; bars are "
                       "bootstrap 95 % intervals. Williams & Beer 2010; Bertschinger et al. "
                       "2014; Liang et al. 2023.", className="method-note"),
                html.Div(id="ds-pid")]),
            html.Section(className="card", children=[
                html.H2("EMAP gap"), html.P(EMAP_EXPLANATION, className="method-note"),
                html.Div(id="ds-emap")]),
            html.Section(className="card", children=[
                html.H2("Interaction types"), html.Div(id="ds-types")]),
            html.Section(className="card", children=[
                html.H2("Modality importance"),
                html.P("The Shapley value of each modality: its average contribution to the "
                       "predicted class's score over all orders of adding modalities.",
                       className="method-note"),
                html.Div(id="ds-importance")]),
            html.Section(className="card", children=[
                html.H2("Robustness"),
                html.P("Accuracy when one modality at a time gets noisier: a steep curve "
                       "means the model depends on that modality.", className="method-note"),
                html.Div(id="ds-robustness")]),
            html.Section(className="card", children=[
                html.H2("Instance map"),
                html.P(EMBEDDING_EXPLANATION, className="method-note"),
                html.Div(id="ds-embedding")]),
        ]),
    ])


@callback(Output("ds-model", "options"), Output("ds-model", "value"),
          Output("ds-dataset", "options"), Output("ds-dataset", "value"),
          Output("ds-msg", "children", allow_duplicate=True),
          Input("ds-project", "value"), State("ds-model", "value"),
          State("ds-dataset", "value"), prevent_initial_call=True)
def change_project(project_id, model_id, dataset_id):
    try:
        with client() as api:
            found = gather(models=lambda: api.models(project_id),
                           datasets=lambda: api.datasets(project_id))
    except ApiError as exc:
        return [], None, [], None, alert(exc.message)
    models, datasets = found["models"], found["datasets"]
    return ([{"label": m["name"], "value": m["id"]} for m in models],
            pick(model_id, [m["id"] for m in models]),
            [{"label": f"{d['name']} ({d['n']} instances)", "value": d["id"]}
             for d in datasets],
            pick(dataset_id, [d["id"] for d in datasets]), None)


@callback(Output("ds-query", "data"), Input("ds-project", "value"),
          Input("ds-model", "value"), Input("ds-dataset", "value"))
def build_query(project, model, dataset) -> str:
    return query_string({"project": project, "model": model, "dataset": dataset})


clientside_callback(REPLACE_STATE_JS, Output("ds-query-applied", "data"),
                    Input("ds-query", "data"))


@callback(Output("ds-jobs", "data"), Output("ds-poll", "disabled"),
          Output("ds-msg", "children"),
          Input("ds-model", "value"), Input("ds-dataset", "value"),
          Input("ds-run", "n_clicks"), Input("ds-poll", "n_intervals"),
          Input({"type": "ds-cancel", "kind": ALL}, "n_clicks"),
          State("ds-project", "value"), State("ds-jobs", "data"))
def follow_jobs(model_id, dataset_id, _run, _tick, _cancel, project_id, jobs):
    """Earlier jobs on selection; submit on "Run summary"; poll; cancel."""
    trigger = ctx.triggered_id
    requests = requests_for(model_id, dataset_id)
    if project_id is None or not requests:
        return {}, True, alert("Choose a model and a dataset first.", kind="info")
    try:
        with client() as api:
            if trigger == "ds-run":
                jobs = {kind: api.submit_job(project_id, kind, params)
                        for kind, params in requests.items()}
            elif isinstance(trigger, dict):
                if not any(t["value"] for t in ctx.triggered):
                    return dash.no_update, dash.no_update, dash.no_update
                kind = trigger["kind"]
                jobs = dict(jobs or {})
                if kind in jobs:
                    jobs[kind] = api.cancel_job(jobs[kind]["id"])
            elif trigger == "ds-poll" and jobs:
                jobs = refresh(api, jobs)
            else:
                jobs = existing_jobs(api.jobs(project_id), requests)
    except ApiError as exc:
        return dash.no_update, True, alert(exc.message)
    return jobs, all_final(jobs), None


@callback(Output("ds-progress", "children"), Input("ds-jobs", "data"),
          State("ds-run", "disabled"))
def draw_progress(jobs, viewer):
    jobs = jobs or {}
    return [progress_row(label, jobs.get(kind), cancellable=not viewer,
                         cancel_id={"type": "ds-cancel", "kind": kind})
            for kind, label in ANALYSES.items()]


def _status(job: dict | None) -> Any:
    """What a panel shows while its job has no result."""
    if job is None:
        return html.P("Not run yet: press “Run summary”.", className="muted")
    if job["state"] == "failed":
        return alert(f"The analysis failed: {job.get('error') or job.get('message')}")
    if job["state"] == "cancelled":
        return alert("The analysis was cancelled; run the summary again.", kind="warning")
    return html.P(f"Running… {float(job.get('progress') or 0):.0%}", className="muted")


def _graph(figure, component_id: str) -> dcc.Graph:
    return dcc.Graph(id=component_id, figure=figure, config=GRAPH_CONFIG)


def _pid_panel(data: dict | None, model: dict | None) -> list:
    data_pairs = (data or {}).get("pairs") or (model or {}).get("data") or {}
    model_pairs = (model or {}).get("pairs") or {}
    pairs = list(data_pairs or model_pairs)
    graphs: list = [_graph(pid_figure(pair, data_pairs.get(pair), model_pairs.get(pair)),
                           f"ds-pid-graph-{k}") for k, pair in enumerate(pairs)]
    if model and "accuracy" in model:
        graphs.append(html.P(f"Model accuracy on this dataset: {model['accuracy']:.1%}.",
                             className="muted"))
    return graphs


def _types_panel(result: dict) -> list:
    dominant = ", ".join(f"{m}: {c}" for m, c in (result.get("dominant_counts") or {}).items())
    return [html.P(result.get("rule", ""), className="method-note rule"),
            _graph(types_figure(result), "ds-types-graph"),
            html.P(f"Dominant modality (instances): {dominant}. Synergistic instances: "
                   f"{result.get('synergistic', 0)}.", className="muted")]


@callback(Output("ds-pid", "children"), Output("ds-emap", "children"),
          Output("ds-types", "children"), Output("ds-importance", "children"),
          Output("ds-robustness", "children"), Output("ds-embedding", "children"),
          Output("ds-shown", "data"),
          Input("ds-jobs", "data"), State("ds-shown", "data"))
def draw_results(jobs, shown):
    """Fetch and draw the results of succeeded jobs; nothing is refetched while only the
    progress of others changes."""
    jobs = jobs or {}
    key = {k: [j["id"], j["state"]] for k, j in jobs.items()}
    if key == shown:
        return (dash.no_update,) * 7
    done = {k: j["id"] for k, j in jobs.items() if j["state"] == "succeeded"}
    try:
        with client() as api:
            results = gather(**{k: (lambda i=i: api.job_result(i)) for k, i in done.items()}
                             ) if done else {}
    except ApiError as exc:
        return (alert(exc.message),) * 6 + (None,)
    pid = (_pid_panel(results.get("data_pid"), results.get("model_pid"))
           if {"data_pid", "model_pid"} & set(results) else _status(jobs.get("data_pid")))
    emap = ([_graph(emap_figure(results["emap"]), "ds-emap-graph"),
             html.P(f"The additive projection agrees with the model's prediction on "
                    f"{results['emap'].get('agreement', 0):.0%} of the instances.",
                    className="muted")]
            if "emap" in results else _status(jobs.get("emap")))
    types = (_types_panel(results["interaction_types"]) if "interaction_types" in results
             else _status(jobs.get("interaction_types")))
    importance = (_graph(importance_figure(results["modality_importance"]),
                         "ds-importance-graph") if "modality_importance" in results
                  else _status(jobs.get("modality_importance")))
    robustness = (_graph(robustness_figure(results["robustness"]), "ds-robustness-graph")
                  if "robustness" in results else _status(jobs.get("robustness")))
    embedding = (_graph(embedding_figure(results["embedding"]), "ds-embedding-graph")
                 if "embedding" in results else _status(jobs.get("embedding")))
    return pid, emap, types, importance, robustness, embedding, key


@callback(Output("ds-go", "href"), Input("ds-embedding-graph", "clickData"),
          State("ds-project", "value"), State("ds-model", "value"),
          State("ds-dataset", "value"), prevent_initial_call=True)
def open_instance(click, project, model, dataset):
    """Click on a point of the instance map → that instance on the Instance page."""
    return clicked_instance_href(click, project, model, dataset) or dash.no_update


dash.register_page(__name__, path="/dataset", title="crosslens — dataset", name="Dataset",
                   layout=layout)
