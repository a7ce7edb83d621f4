"""Instance explorer: one instance, what drove its prediction, and how its modalities combine.

Everything on screen is a function of the URL query (project, model, dataset, instance,
method, target, output, tab, interaction modalities a/b and pair, attention layer/head/query),
so a copied link shows a teammate the same view. Each panel calls the API only while its tab
is open, and each call has its own loading state and error message.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, clientside_callback, ctx, dcc, html

from app.api_client import ApiClient, ApiError, client
from app.components import (
    INTERACTIONS_NOTE,
    METHODS,
    OUTPUTS,
    RELU_MESSAGE,
    ROLLOUT_NOTE,
    alert,
    gather,
    loading,
    reference,
)
from app.components.urlstate import (
    PREDICTED,
    REPLACE_STATE_JS,
    as_int,
    as_pair,
    explain_request,
    pick,
    query_string,
)
from app.figures import (
    attention_map_figure,
    head_grid_figure,
    interaction_figure,
    modality_figure,
    pair_from_event,
    probability_figure,
    whatif_figure,
)
from app.figures.attention import (
    head_from_event,
    metric_label,
    query_weights,
    segment_of,
    summary_metrics,
)

TABS = {"attr": "Attributions", "inter": "Cross-modal interactions", "attn": "Attention",
        "whatif": "What if…"}
FINDER_LIMIT = 100
# The toolbar appears on hover only, so it never covers a figure's title in a screenshot.
GRAPH_CONFIG = {"displaylogo": False, "displayModeBar": "hover",
                "toImageButtonOptions": {"scale": 2}}
HIDDEN = {"display": "none"}


def graph(component_id: str, **kwargs: Any) -> dcc.Graph:
    return dcc.Graph(id=component_id, config=GRAPH_CONFIG, figure=_blank(), **kwargs)


def _blank() -> dict:
    return {"data": [], "layout": {"xaxis": {"visible": False}, "yaxis": {"visible": False},
                                   "height": 40, "margin": {"l": 0, "r": 0, "t": 0, "b": 0}}}


def _field(label: str, control: Any, *, class_name: str = "field") -> html.Div:
    return html.Div(className=class_name, children=[html.Label(label, className="label"),
                                                    control])


def _resolve(api: ApiClient, query: dict) -> dict:
    """Project, model and dataset from the query, falling back to the first ones visible."""
    projects = api.projects()
    project = pick(as_int(query.get("project")), [p["id"] for p in projects])
    models = api.models(project) if project is not None else []
    datasets = api.datasets(project) if project is not None else []
    return {
        "projects": projects, "models": models, "datasets": datasets, "project": project,
        "model": pick(as_int(query.get("model")), [m["id"] for m in models]),
        "dataset": pick(as_int(query.get("dataset")), [d["id"] for d in datasets]),
    }


def _class_options(model: dict | None) -> list[dict]:
    classes = (model or {}).get("spec", {}).get("classes", [])
    return [{"label": "the predicted class", "value": PREDICTED}] + [
        {"label": f"{k}: {name}", "value": str(k)} for k, name in enumerate(classes)]


def _modality_names(model: dict | None) -> list[str]:
    return [m["name"] for m in (model or {}).get("spec", {}).get("modalities", [])]


def _initial_option(value: int | None) -> list[dict]:
    """Keeps a value from the URL selectable until the real options arrive."""
    return [] if value is None else [{"label": str(value), "value": value}]


def layout(**query: str) -> html.Div:
    try:
        with client() as api:
            found = _resolve(api, query)
    except ApiError as exc:
        return html.Div(id="instance-page", children=[html.H1("Instance"), alert(exc.message)])
    if found["project"] is None:
        return html.Div(id="instance-page", children=[html.H1("Instance"), alert(
            "You are not a member of any project yet. Ask an admin to add you to one.",
            kind="info")])
    model = next((m for m in found["models"] if m["id"] == found["model"]), None)
    modalities = _modality_names(model)
    method = pick(query.get("method"), list(METHODS))
    target = pick(query.get("target"), [o["value"] for o in _class_options(model)])
    output = pick(query.get("output"), list(OUTPUTS))
    tab = pick(query.get("tab"), list(TABS))
    a = pick(query.get("a"), modalities)
    b = pick(query.get("b"), [m for m in modalities if m != a] or modalities)
    head = [as_int(query.get("layer")), as_int(query.get("head"))]
    return html.Div(id="instance-page", children=[
        dcc.Store(id="inst-view"), dcc.Store(id="inst-inter-data"),
        dcc.Store(id="inst-attn-data"),
        dcc.Store(id="inst-pair", data=as_pair(query.get("pair"))),
        dcc.Store(id="inst-head", data=head if None not in head else None),
        dcc.Store(id="inst-query"), dcc.Store(id="inst-query-applied"),
        dcc.Store(id="inst-total"),
        html.Div(className="page-head", children=[
            html.H1("Instance"),
            loading("inst-summary", className="instance-summary"),
        ]),
        html.Section(className="card controls", children=[
            html.Div(className="control-row", children=[
                _field("Project", dcc.Dropdown(
                    id="inst-project", clearable=False, value=found["project"],
                    options=[{"label": p["name"], "value": p["id"]} for p in found["projects"]])),
                _field("Model", dcc.Dropdown(
                    id="inst-model", clearable=False, value=found["model"],
                    placeholder="no model in this project yet",
                    options=[{"label": m["name"], "value": m["id"]} for m in found["models"]])),
                _field("Dataset", dcc.Dropdown(
                    id="inst-dataset", clearable=False, value=found["dataset"],
                    placeholder="no dataset in this project yet",
                    options=[{"label": f"{d['name']} ({d['n']} instances)", "value": d["id"]}
                             for d in found["datasets"]])),
                _field("Instance", html.Div(className="stepper", children=[
                    html.Button("◀", id="inst-prev", title="previous instance",
                                className="btn btn-small", **{"aria-label": "previous"}),
                    dcc.Input(id="inst-index", type="number", min=0, step=1, debounce=True,
                              value=as_int(query.get("instance"), 0), className="index-input"),
                    html.Button("▶", id="inst-next", title="next instance",
                                className="btn btn-small", **{"aria-label": "next"}),
                    html.Span(id="inst-count", className="muted"),
                ]), class_name="field field-narrow"),
            ]),
            html.Details(className="finder", children=[
                html.Summary("Find an instance (by label, correctness, confidence)"),
                html.Div(className="control-row", children=[
                    _field("Label", dcc.Dropdown(id="inst-filter-label",
                                                 placeholder="any label")),
                    _field("Prediction", dcc.RadioItems(
                        id="inst-filter-correct", value="all", inline=True,
                        options=[{"label": " all", "value": "all"},
                                 {"label": " correct", "value": "correct"},
                                 {"label": " wrong", "value": "wrong"}])),
                    _field("Confidence", dcc.RangeSlider(
                        id="inst-filter-conf", min=0, max=1, step=0.05, value=[0, 1],
                        marks={0: "0%", 0.5: "50%", 1: "100%"})),
                    _field("Matches (type to search by id)", dcc.Loading(dcc.Dropdown(
                        id="inst-finder", placeholder="choose an instance"), type="dot")),
                ]),
            ]),
            html.Div(className="control-row", children=[
                _field("Attribution method", dcc.RadioItems(
                    id="inst-method", value=method, inline=True,
                    options=[{"label": f" {m['label']}", "value": k}
                             for k, m in METHODS.items()])),
                _field("Explain the score of", dcc.Dropdown(
                    id="inst-target", clearable=False, value=target,
                    options=_class_options(model))),
                _field("Model output", dcc.RadioItems(
                    id="inst-output", value=output, inline=True,
                    options=[{"label": f" {v}", "value": k} for k, v in OUTPUTS.items()])),
            ]),
            html.Div(id="inst-method-note"),
        ]),
        html.Div(className="instance-grid", children=[
            html.Aside(className="side", children=[
                html.Section(className="card", children=[
                    html.H2("Prediction"),
                    dcc.Loading(graph("inst-prob-graph"), type="circle", delay_show=150),
                ]),
                html.Section(className="card", children=[
                    html.H2("Notes on this instance"),
                    loading("inst-notes", className="notes"),
                    dcc.Textarea(id="inst-note-text", className="note-input",
                                 placeholder="What did you notice? (seen by project members)",
                                 maxLength=5000),
                    html.Button("Add note", id="inst-note-add", className="btn"),
                    html.Div(id="inst-note-msg"),
                ]),
            ]),
            html.Div(className="main", children=[
                dcc.Tabs(id="inst-tab", value=tab, className="tabs", children=[
                    dcc.Tab(label=label, value=key) for key, label in TABS.items()]),
                html.Section(id="inst-panel-attr", className="card panel", children=[
                    html.Div(className="control-row", children=[
                        _field("Overlay opacity", dcc.Slider(
                            id="inst-opacity", min=0, max=1, step=0.1, value=0.6,
                            marks={0: "0", 0.5: "0.5", 1: "1"})),
                    ]),
                    loading("inst-attr"),
                ]),
                html.Section(id="inst-panel-inter", className="card panel", children=[
                    reference(INTERACTIONS_NOTE),
                    html.Div(className="control-row", children=[
                        _field("Modality A (rows)", dcc.Dropdown(
                            id="inst-a", clearable=False, value=a, options=modalities)),
                        _field("Modality B (columns)", dcc.Dropdown(
                            id="inst-b", clearable=False, value=b, options=modalities)),
                    ]),
                    loading("inst-inter-msg"),
                    html.Div(className="inter-grid", children=[
                        html.Div(children=[
                            graph("inst-inter-graph", clear_on_unhover=True),
                            html.P("Hover a cell to see the pair on both inputs; click it (or "
                                   "a top pair) to pin it.", className="muted hint"),
                        ]),
                        html.Div(children=[
                            html.H3("Top interacting pairs"),
                            html.Ol(id="inst-inter-pairs", className="pair-list"),
                        ]),
                    ]),
                    html.Div(className="two-col", children=[
                        graph("inst-inter-a-graph"), graph("inst-inter-b-graph")]),
                ]),
                html.Section(id="inst-panel-attn", className="card panel", children=[
                    loading("inst-attn-msg"),
                    html.Div(className="control-row", children=[
                        _field("Summarise each head by", dcc.Dropdown(
                            id="inst-attn-metric", clearable=False)),
                        _field("Query token (attention from)", dcc.Dropdown(
                            id="inst-attn-query", value=as_int(query.get("query")),
                            options=_initial_option(as_int(query.get("query"))),
                            placeholder="pick a token")),
                    ]),
                    html.P("Click a cell of the grid to open that head.", className="muted hint"),
                    graph("inst-attn-grid"),
                    graph("inst-attn-map"),
                    html.Div(className="two-col", children=[
                        graph("inst-attn-image"), graph("inst-attn-text")]),
                    reference(ROLLOUT_NOTE),
                    graph("inst-attn-rollout"),
                ]),
                html.Section(id="inst-panel-whatif", className="card panel", children=[
                    html.P("Replace whole modalities and see how the prediction changes: a "
                           "large change means the model relies on what you removed.",
                           className="method-note"),
                    html.Div(className="control-row", children=[
                        _field("Remove", dcc.Checklist(
                            id="inst-whatif-drop", inline=True,
                            options=[{"label": f" {m}", "value": m} for m in modalities])),
                        _field("Replace with", dcc.RadioItems(
                            id="inst-whatif-replace", value="baseline", inline=True,
                            options=[{"label": " the baseline (zeros / mask tokens)",
                                      "value": "baseline"},
                                     {"label": " the dataset mean", "value": "mean"}])),
                        html.Button("Run", id="inst-whatif-run", className="btn"),
                    ]),
                    loading("inst-whatif"),
                ]),
            ]),
        ]),
    ])


# -- state → URL ----------------------------------------------------------------------------


@callback(Output("inst-query", "data"),
          Input("inst-project", "value"), Input("inst-model", "value"),
          Input("inst-dataset", "value"), Input("inst-index", "value"),
          Input("inst-method", "value"), Input("inst-target", "value"),
          Input("inst-output", "value"), Input("inst-tab", "value"),
          Input("inst-a", "value"), Input("inst-b", "value"), Input("inst-pair", "data"),
          Input("inst-head", "data"), Input("inst-attn-query", "value"))
def build_query(project, model, dataset, index, method, target, output, tab, a, b, pair,
                head, query) -> str:
    layer_head = head if isinstance(head, list) else [None, None]
    return query_string({
        "project": project, "model": model, "dataset": dataset, "instance": index,
        "method": method, "target": target, "output": output, "tab": tab, "a": a, "b": b,
        "pair": pair, "layer": layer_head[0], "head": layer_head[1], "query": query})


clientside_callback(REPLACE_STATE_JS, Output("inst-query-applied", "data"),
                    Input("inst-query", "data"))

clientside_callback(
    """function(tab) {
        const keys = ["attr", "inter", "attn", "whatif"];
        return keys.map(k => k === tab ? {} : {display: "none"});
    }""",
    [Output(f"inst-panel-{k}", "style") for k in TABS], Input("inst-tab", "value"))


# -- choosing what to look at ---------------------------------------------------------------


@callback(Output("inst-model", "options"), Output("inst-model", "value"),
          Output("inst-dataset", "options"), Output("inst-dataset", "value"),
          Input("inst-project", "value"), State("inst-model", "value"),
          State("inst-dataset", "value"), prevent_initial_call=True)
def on_project(project, model, dataset):
    try:
        with client() as api:
            models, datasets = api.models(project), api.datasets(project)
    except ApiError:
        return [], None, [], None
    return ([{"label": m["name"], "value": m["id"]} for m in models],
            pick(model, [m["id"] for m in models]),
            [{"label": f"{d['name']} ({d['n']} instances)", "value": d["id"]} for d in datasets],
            pick(dataset, [d["id"] for d in datasets]))


# Prev/next and the finder run in the browser: one server round trip less per instance.
clientside_callback(
    """function(prev, next, found, index, total) {
        const trigger = (dash_clientside.callback_context.triggered[0] || {}).prop_id || "";
        if (trigger.startsWith("inst-finder")) {
            return (found === null || found === undefined) ? dash_clientside.no_update : found;
        }
        let value = (parseInt(index, 10) || 0) + (trigger.startsWith("inst-prev") ? -1 : 1);
        if (total) { value = Math.min(value, total - 1); }
        return Math.max(0, value);
    }""",
    Output("inst-index", "value"),
    Input("inst-prev", "n_clicks"), Input("inst-next", "n_clicks"),
    Input("inst-finder", "value"), State("inst-index", "value"), State("inst-total", "data"),
    prevent_initial_call=True)


@callback(Output("inst-method-note", "children"), Input("inst-method", "value"))
def describe_method(method):
    return reference(METHODS.get(method) or METHODS["integrated_gradients"])


@callback(Output("inst-view", "data"), Output("inst-summary", "children"),
          Output("inst-prob-graph", "figure"), Output("inst-count", "children"),
          Output("inst-total", "data"),
          Output("inst-target", "options"), Output("inst-filter-label", "options"),
          Output("inst-a", "options"), Output("inst-b", "options"),
          Output("inst-whatif-drop", "options"),
          Input("inst-model", "value"), Input("inst-dataset", "value"),
          Input("inst-index", "value"), Input("inst-output", "value"))
def load_instance(model_id, dataset_id, index, output):
    """The instance, its prediction and the model's spec: what every panel builds on."""
    keep = (dash.no_update,) * 5
    if model_id is None or dataset_id is None:
        return (None, alert("Choose a model and a dataset (upload them under Models & data).",
                            kind="info"), _blank(), "", None, *keep)
    index = as_int(index, 0)
    try:
        with client() as api:
            dataset = api.dataset(dataset_id)
            if not 0 <= index < dataset["n"]:
                return (None, alert(f"Instance {index} does not exist: this dataset has "
                                    f"{dataset['n']} instances (0–{dataset['n'] - 1})."),
                        _blank(), f"of {dataset['n']}", dataset["n"], *keep)
            found = gather(
                model=lambda: api.model(model_id),
                view=lambda: api.instance(dataset_id, index, model_id=model_id),
                prediction=lambda: api.explain("predict", {
                    "model_id": model_id, "dataset_id": dataset_id, "index": index,
                    "output": output or "logits"}))
    except ApiError as exc:
        return None, alert(exc.message), _blank(), "", None, *keep
    model, view, prediction = found["model"], found["view"], found["prediction"]
    classes = prediction["classes"]
    predicted, label = prediction["predicted"], prediction["label"]
    correct = predicted == label
    summary = html.Div(className="summary-line", children=[
        html.Span(f"#{index}", className="summary-index"),
        html.Span(f"id {view['id']}", className="muted"),
        html.Span(["label ", html.B(classes[label] if 0 <= label < len(classes) else label)]),
        html.Span(["predicted ", html.B(classes[predicted]),
                   f" ({prediction['probs'][predicted]:.0%})"]),
        html.Span("correct" if correct else "wrong",
                  className=f"badge {'badge-ok' if correct else 'badge-bad'}"),
    ])
    names = _modality_names(model)
    options = [{"label": n, "value": n} for n in names]
    labels = [{"label": f"{k}: {c}", "value": k} for k, c in enumerate(classes)]
    data = {"view": view, "model": {"id": model["id"], "smooth": model.get("smooth"),
                                    "classes": classes, "modalities": names},
            "prediction": prediction, "total": dataset["n"]}
    return (data, summary, probability_figure(prediction), f"of {dataset['n']}", dataset["n"],
            _class_options(model), labels, options, options,
            [{"label": f" {n}", "value": n} for n in names])


@callback(Output("inst-a", "value"), Output("inst-b", "value"),
          Input("inst-a", "options"), State("inst-a", "value"), State("inst-b", "value"),
          prevent_initial_call=True)
def keep_modalities_valid(options, a, b):
    """After switching to a model with other modalities, fall back to two it has."""
    names = [o["value"] if isinstance(o, dict) else o for o in options or []]
    if not names or (a in names and b in names and a != b):
        return dash.no_update, dash.no_update
    new_a = pick(a, names)
    return new_a, pick(b if b != new_a else None, [n for n in names if n != new_a] or names)


@callback(Output("inst-finder", "options"),
          Input("inst-model", "value"), Input("inst-dataset", "value"),
          Input("inst-filter-label", "value"), Input("inst-filter-correct", "value"),
          Input("inst-filter-conf", "value"))
def find_instances(model_id, dataset_id, label, correctness, confidence):
    if model_id is None or dataset_id is None:
        return []
    try:
        with client() as api:
            page = api.instances(dataset_id, limit=FINDER_LIMIT, label=label, model_id=model_id)
    except ApiError as exc:
        return [{"label": exc.message, "value": -1, "disabled": True}]
    low, high = confidence or (0, 1)
    options = []
    for row in page["items"]:
        if correctness == "correct" and row.get("correct") is False:
            continue
        if correctness == "wrong" and row.get("correct") is not False:
            continue
        conf = row.get("confidence")
        if conf is not None and not low <= conf <= high:
            continue
        verdict = "" if row.get("correct") is None else (" ✓" if row["correct"] else " ✗")
        shown = f" → {row['predicted']} ({conf:.0%})" if conf is not None else ""
        options.append({"label": f"#{row['index']} · {row['id']} · label {row['label']}"
                                 f"{shown}{verdict}", "value": row["index"]})
    return options


# -- panels ---------------------------------------------------------------------------------


@callback(Output("inst-attr", "children"),
          Input("inst-model", "value"), Input("inst-dataset", "value"),
          Input("inst-index", "value"), Input("inst-method", "value"),
          Input("inst-target", "value"), Input("inst-output", "value"),
          Input("inst-tab", "value"), State("inst-opacity", "value"))
def attributions(model_id, dataset_id, index, method, target, output, tab, opacity):
    """Fetch and draw in one step, alongside (not after) the instance load."""
    index = as_int(index)
    if tab != "attr" or model_id is None or dataset_id is None or index is None or index < 0:
        return dash.no_update
    request = explain_request({"model": model_id, "dataset": dataset_id, "instance": index,
                               "target": target, "output": output})
    try:
        with client() as api:
            found = gather(
                result=lambda: api.explain("attributions", {**request, "method": method}),
                view=lambda: api.instance(dataset_id, index, model_id=model_id),
                model=lambda: api.model(model_id))
    except ApiError as exc:
        return alert(exc.message)
    result, view = found["result"], {"view": found["view"]}
    classes = found["model"]["spec"]["classes"]
    target = result.get("target")
    name = classes[target] if target is not None and 0 <= target < len(classes) else target
    delta = result.get("delta")
    head = html.P(className="muted", children=
        f"{METHODS.get(result['method'], {}).get('label', result['method'])} for the score of "
        f"class “{name}”. Orange pushes towards that class, blue away from it."
        + (f" Completeness error δ = {delta:.2g}." if delta is not None else ""))
    share = _modality_shares(result)
    graphs = []
    for modality, attribution in result["modalities"].items():
        modality_view = view["view"]["modalities"].get(modality)
        if modality_view is None:
            continue
        title = f"{modality} · {share.get(modality, 0):.0%} of total |attribution|"
        figure = modality_figure(modality_view, attribution, title=title, opacity=opacity)
        graphs.append(dcc.Graph(id={"type": "inst-attr-graph", "name": modality},
                                figure=figure, config=GRAPH_CONFIG, className="modality-graph"))
    return [head, html.Div(graphs, className="modality-grid")]


clientside_callback(
    """function(opacity, figures) {
        return figures.map(fig => {
            const copy = Object.assign({}, fig);
            copy.data = fig.data.map(t => t.meta === "overlay"
                ? Object.assign({}, t, {opacity: opacity}) : t);
            return copy;
        });
    }""",
    Output({"type": "inst-attr-graph", "name": ALL}, "figure"),
    Input("inst-opacity", "value"), State({"type": "inst-attr-graph", "name": ALL}, "figure"),
    prevent_initial_call=True)


def _modality_shares(result: dict) -> dict[str, float]:
    totals = {k: abs(v.get("abs_total") or 0.0) for k, v in result["modalities"].items()}
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in totals.items()}


@callback(Output("inst-inter-data", "data"), Output("inst-inter-msg", "children"),
          Input("inst-view", "data"), Input("inst-a", "value"), Input("inst-b", "value"),
          Input("inst-target", "value"), Input("inst-output", "value"),
          Input("inst-tab", "value"), State("inst-dataset", "value"))
def load_interactions(view, a, b, target, output, tab, dataset_id):
    if tab != "inter" or not view:
        return dash.no_update, dash.no_update
    if not a or not b or a == b:
        return None, alert("Choose two different modalities.", kind="info")
    request = explain_request({"model": view["model"]["id"], "dataset": dataset_id,
                               "instance": view["view"]["index"], "target": target,
                               "output": output})
    try:
        with client() as api:
            result = api.explain("interactions", {**request, "a": a, "b": b, "top_k": 10})
    except ApiError as exc:
        return None, alert(exc.message)
    messages = []
    if result.get("all_zero"):
        relu = view["model"].get("smooth") is False
        text = RELU_MESSAGE if relu else (result.get("note") or
                                          "Every interaction is zero for this instance.")
        children = [html.P(text)]
        if (output or "logits") != "log_softmax":
            children.append(html.Button("Explain log-probabilities instead",
                                        id="inst-use-logsoftmax", className="btn"))
        messages.append(html.Div(children, className="alert alert-warning", role="status"))
    elif result.get("note"):   # e.g. padding left out: a hint, not an alert
        messages.append(html.P(result["note"], className="muted hint"))
    return result, messages


@callback(Output("inst-output", "value"), Input("inst-use-logsoftmax", "n_clicks"),
          prevent_initial_call=True)
def use_log_softmax(clicks):
    return "log_softmax" if clicks else dash.no_update


@callback(Output("inst-pair", "data"),
          Input("inst-inter-graph", "clickData"),
          Input({"type": "inst-top-pair", "i": ALL, "j": ALL}, "n_clicks"),
          prevent_initial_call=True)
def choose_pair(click, _pair_clicks):
    trigger = ctx.triggered_id
    if isinstance(trigger, dict):
        if not any(t["value"] for t in ctx.triggered):
            return dash.no_update
        return [trigger["i"], trigger["j"]]
    pair = pair_from_event(click)
    return list(pair) if pair else dash.no_update


def _selected_pair(result: dict, pair: list | None) -> tuple[int, int] | None:
    n_a, n_b = len(result["a_labels"]), len(result["b_labels"])
    if isinstance(pair, list) and len(pair) == 2 and 0 <= pair[0] < n_a and 0 <= pair[1] < n_b:
        return pair[0], pair[1]
    return None


@callback(Output("inst-inter-graph", "figure"), Output("inst-inter-pairs", "children"),
          Input("inst-inter-data", "data"), Input("inst-pair", "data"))
def draw_interactions(result, pair):
    if not result:
        return _blank(), []
    selected = _selected_pair(result, pair)
    heatmap = interaction_figure(result, selected=selected,
                                 title=f"Interaction between {result['a']} and {result['b']}")
    items = [html.Li(html.Button(
        [html.Span(f"{p['a_label']} × {p['b_label']}"),
         html.Span(f"{p['value']:+.3g}",
                   className=f"pair-value {'pos' if p['value'] > 0 else 'neg'}")],
        id={"type": "inst-top-pair", "i": p["i"], "j": p["j"]},
        className="pair" + (" pair-selected" if selected == (p["i"], p["j"]) else "")))
        for p in result["top_pairs"]]
    return heatmap, items


@callback(Output("inst-inter-a-graph", "figure"), Output("inst-inter-b-graph", "figure"),
          Input("inst-inter-data", "data"), Input("inst-pair", "data"),
          Input("inst-inter-graph", "hoverData"), State("inst-view", "data"))
def draw_pair_on_inputs(result, pair, hover, view):
    """The hovered (else the pinned) pair outlined on both modalities' inputs."""
    if not result or not view:
        return _blank(), _blank()
    shown = pair_from_event(hover) or _selected_pair(result, pair)
    views = view["view"]["modalities"]
    figures = []
    for side, name, labels in ((0, result["a"], result["a_labels"]),
                               (1, result["b"], result["b_labels"])):
        if name not in views:
            figures.append(_blank())
            continue
        element = shown[side] if shown and shown[side] < len(labels) else None
        title = name + (f" · {labels[element]}" if element is not None else "")
        figures.append(modality_figure(views[name], None, title=title,
                                       highlight=[] if element is None else [element],
                                       n_elements=len(labels)))
    return figures[0], figures[1]


@callback(Output("inst-attn-data", "data"), Output("inst-attn-msg", "children"),
          Output("inst-attn-query", "options"), Output("inst-attn-metric", "options"),
          Output("inst-attn-metric", "value"),
          Input("inst-view", "data"), Input("inst-head", "data"),
          Input("inst-attn-query", "value"), Input("inst-target", "value"),
          Input("inst-output", "value"), Input("inst-tab", "value"),
          State("inst-dataset", "value"), State("inst-attn-metric", "value"))
def load_attention(view, head, query, target, output, tab, dataset_id, metric):
    if tab != "attn" or not view:
        return (dash.no_update,) * 5
    layer, head_index = head if isinstance(head, list) else (None, None)
    request = explain_request({"model": view["model"]["id"], "dataset": dataset_id,
                               "instance": view["view"]["index"], "target": target,
                               "output": output})
    try:
        with client() as api:
            result = api.explain("attention", {**request, "layer": layer, "head": head_index,
                                               "query": query})
    except ApiError as exc:
        return None, alert(exc.message), [], [], None
    if not result.get("available"):
        note = result.get("note") or "This model has no attention layers crosslens can capture."
        return None, alert(note, kind="info"), [], [], None
    metrics = summary_metrics(result)
    queries = [{"label": f"{k}: {label}", "value": k} for k, label in enumerate(result["labels"])]
    return (result, None, queries, [{"label": metric_label(m), "value": m} for m in metrics],
            pick(metric, metrics))


@callback(Output("inst-head", "data"), Input("inst-attn-grid", "clickData"),
          prevent_initial_call=True)
def choose_head(click):
    chosen = head_from_event(click)
    return list(chosen) if chosen else dash.no_update


@callback(Output("inst-attn-grid", "figure"), Output("inst-attn-map", "figure"),
          Output("inst-attn-image", "figure"), Output("inst-attn-text", "figure"),
          Output("inst-attn-rollout", "figure"),
          Input("inst-attn-data", "data"), Input("inst-attn-metric", "value"),
          State("inst-head", "data"), State("inst-attn-query", "value"),
          State("inst-view", "data"))
def draw_attention(result, metric, head, query, view):
    if not result or not view or not metric:
        return (_blank(),) * 5
    selected = tuple(head) if isinstance(head, list) else None
    if selected is None and None not in (result.get("layer"), result.get("head")):
        selected = (result["layer"], result["head"])
    grid = head_grid_figure(result, metric, selected=selected,
                            title=f"Heads: {metric_label(metric)}")
    labels, segments = result["labels"], result.get("segments") or []
    head_map, image_fig, text_fig = _blank(), _blank(), _blank()
    # The API says which layer, head and query it drew (its defaults when none was chosen).
    query = result.get("query", query)
    if result.get("map"):
        layer, head_shown = result.get("layer"), result.get("head")
        where = (f"layer {layer}, " if layer is not None else "the last layer, ") + (
            f"head {head_shown}" if head_shown is not None else "mean over heads")
        head_map = attention_map_figure(result["map"], labels, segments=segments, query=query,
                                        title=f"Attention of {where}")
        views = view["view"]["modalities"]
        query_label = labels[query] if query is not None and query < len(labels) else None
        image_name = next((s["modality"] for s in segments if s.get("grid")), None)
        if result.get("query_grid") and image_name in views:
            image_fig = modality_figure(views[image_name], None, overlay=result["query_grid"],
                                        overlay_title="attention", opacity=0.65,
                                        title=f"“{query_label}” attends to {image_name}")
        text_name = next((s["modality"] for s in segments if s.get("modality") in views
                          and views[s["modality"]]["kind"] == "text"), None)
        span = segment_of(segments, text_name) if text_name else None
        if query is not None and span:
            text_fig = modality_figure(views[text_name], None,
                                       weights=query_weights(result["map"], query, span),
                                       title=f"“{query_label}” attends to {text_name}")
    rollout = (attention_map_figure(result["rollout"], labels, segments=segments,
                                    title="Attention rollout (all layers)",
                                    value_name="rollout weight")
               if result.get("rollout") else _blank())
    return grid, head_map, image_fig, text_fig, rollout


@callback(Output("inst-whatif", "children"), Input("inst-whatif-run", "n_clicks"),
          State("inst-whatif-drop", "value"), State("inst-whatif-replace", "value"),
          State("inst-view", "data"), State("inst-dataset", "value"),
          State("inst-target", "value"), State("inst-output", "value"),
          prevent_initial_call=True)
def run_whatif(_clicks, drop, replace, view, dataset_id, target, output):
    if not view:
        return alert("Load an instance first.", kind="info")
    if not drop:
        return alert("Tick at least one modality to remove.", kind="info")
    request = explain_request({"model": view["model"]["id"], "dataset": dataset_id,
                               "instance": view["view"]["index"], "target": target,
                               "output": output})
    try:
        with client() as api:
            result = api.explain("whatif", {**request, "drop": drop, "replace": replace})
    except ApiError as exc:
        return alert(exc.message)
    classes = result["classes"]
    before, after = result["predicted_before"], result["predicted_after"]
    verdict = (f"The prediction stays “{classes[before]}”." if before == after else
               f"The prediction changes from “{classes[before]}” to “{classes[after]}”.")
    return [html.P(verdict, className="whatif-verdict"),
            dcc.Graph(figure=whatif_figure(result, dropped=drop), config=GRAPH_CONFIG)]


# -- notes ----------------------------------------------------------------------------------


def _note_items(notes: list[dict]) -> list:
    if not notes:
        return [html.P("No notes yet.", className="muted")]
    return [html.Li(className="note", children=[
        html.Div(className="note-meta", children=[
            html.B(n["author"]), html.Span(str(n["created_at"])[:16].replace("T", " "),
                                           className="muted")]),
        html.P(n["text"], className="note-text")]) for n in notes]


@callback(Output("inst-notes", "children"), Output("inst-note-msg", "children"),
          Output("inst-note-text", "value"),
          Input("inst-view", "data"), Input("inst-note-add", "n_clicks"),
          State("inst-note-text", "value"), State("inst-project", "value"),
          State("inst-dataset", "value"))
def notes(view, _add, text, project_id, dataset_id):
    if not view or project_id is None:
        return [], None, dash.no_update
    index, model_id = view["view"]["index"], view["model"]["id"]
    message, keep_text = None, dash.no_update
    try:
        with client() as api:
            if ctx.triggered_id == "inst-note-add":
                if not (text or "").strip():
                    message = alert("Write something first.", kind="info")
                else:
                    api.add_note(project_id, dataset_id, index, text.strip(), model_id=model_id)
                    keep_text = ""
            items = api.notes(project_id, dataset_id, index, model_id=model_id)
    except ApiError as exc:
        return dash.no_update, alert(exc.message), keep_text
    return html.Ul(_note_items(items), className="note-list"), message, keep_text


dash.register_page(__name__, path="/instance", title="crosslens — instance", name="Instance",
                   layout=layout)
