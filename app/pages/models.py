"""Models & data: upload a model or a dataset zip, see what the project holds, delete.

Uploads go to the API, which validates them (format, spec, a trial forward pass); its error
message is shown next to the field it is about, so a person knows which file to fix.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, ctx, dcc, html

from app.api_client import ApiError, client
from app.components import alert, human_bytes
from app.components.forms import decode_upload, field_errors
from app.components.urlstate import as_int, pick

FORMATS = {
    "safetensors": {"main": ("weights", "Weights (.safetensors)", ".safetensors"),
                    "meta": ("config", "Architecture config (.json)", ".json")},
    "pt2": {"main": ("program", "torch.export program (.pt2)", ".pt2"),
            "meta": ("spec", "ModelSpec (.json)", ".json")},
}
FIELDS = ("name", "main", "meta", "dataset")


def _upload_box(component_id: str, label: str, accept: str) -> html.Div:
    return html.Div(className="field", children=[
        html.Label(label, id=f"{component_id}-label", className="label"),
        dcc.Upload(id=component_id, accept=accept, multiple=False, className="upload",
                   children=html.Div(["Drop a file here or ", html.A("choose one")])),
        html.Div(id=f"{component_id}-info", className="muted file-info"),
        html.Div(id=f"{component_id}-error", className="field-error", role="alert"),
    ])


def _progress(text: str) -> html.Div:
    return html.Div(className="progress", role="progressbar", children=[
        html.Div(text, className="progress-text"), html.Div(className="progress-bar")])


def layout(**query: str) -> html.Div:
    try:
        with client() as api:
            projects = api.projects()
    except ApiError as exc:
        return html.Div(id="models-page", children=[html.H1("Models & data"),
                                                    alert(exc.message)])
    project = pick(as_int(query.get("project")), [p["id"] for p in projects])
    if project is None:
        return html.Div(id="models-page", children=[html.H1("Models & data"), alert(
            "You are not a member of any project yet; ask an admin to add you to one.",
            kind="info")])
    return html.Div(id="models-page", children=[
        dcc.Store(id="models-refresh", data=0), dcc.Store(id="models-pending-delete"),
        dcc.ConfirmDialog(id="models-confirm"),
        html.Div(className="page-head", children=[
            html.H1("Models & data"),
            html.Div(className="field field-inline", children=[
                html.Label("Project", className="label"),
                dcc.Dropdown(id="models-project", clearable=False, value=project,
                             options=[{"label": p["name"], "value": p["id"]} for p in projects]),
            ]),
        ]),
        html.Div(className="two-col", children=[
            html.Section(className="card", children=[
                html.H2("Upload a model"),
                html.P(["Preferred: ", html.B(".safetensors weights + a JSON config"),
                        " naming a registered architecture (loads safely). A ",
                        html.B("torch.export .pt2"), " program runs only in a sandbox. "
                        "Pickled full models are refused."], className="muted"),
                html.Div(className="field", children=[
                    html.Label("Name", className="label", htmlFor="models-name"),
                    dcc.Input(id="models-name", type="text", maxLength=64,
                              placeholder="e.g. vqa-fusion-v2", className="text-input"),
                    html.Div(id="models-name-error", className="field-error", role="alert"),
                ]),
                dcc.RadioItems(id="models-format", value="safetensors", inline=True,
                               className="format-choice",
                               options=[{"label": " .safetensors + config",
                                         "value": "safetensors"},
                                        {"label": " .pt2 + spec", "value": "pt2"}]),
                _upload_box("models-main", *FORMATS["safetensors"]["main"][1:]),
                _upload_box("models-meta", *FORMATS["safetensors"]["meta"][1:]),
                html.Button("Upload model", id="models-upload", className="btn"),
                dcc.Loading(html.Div(id="models-upload-status"), delay_show=100,
                            custom_spinner=_progress("Uploading and validating the model…")),
            ]),
            html.Section(className="card", children=[
                html.H2("Upload a dataset"),
                html.P(["A ", html.B(".zip"), " with ", html.Code("manifest.json"),
                        " at its root and one .safetensors (or .npy) file per modality plus "
                        "the labels; see the README for the manifest."], className="muted"),
                _upload_box("models-dataset", "Dataset (.zip)", ".zip"),
                html.Button("Upload dataset", id="models-dataset-upload", className="btn"),
                dcc.Loading(html.Div(id="models-dataset-status"), delay_show=100,
                            custom_spinner=_progress("Uploading and checking the dataset…")),
            ]),
        ]),
        html.Section(className="card", children=[
            html.H2("Models"), dcc.Loading(html.Div(id="models-list"), type="circle")]),
        html.Section(className="card", children=[
            html.H2("Datasets"), dcc.Loading(html.Div(id="datasets-list"), type="circle")]),
    ])


@callback(Output("models-main-label", "children"), Output("models-main", "accept"),
          Output("models-meta-label", "children"), Output("models-meta", "accept"),
          Input("models-format", "value"))
def choose_format(fmt):
    spec = FORMATS.get(fmt, FORMATS["safetensors"])
    return spec["main"][1], spec["main"][2], spec["meta"][1], spec["meta"][2]


@callback(Output("models-main-info", "children"), Input("models-main", "filename"),
          State("models-main", "contents"))
def main_info(filename, contents):
    return _file_info(filename, contents)


@callback(Output("models-meta-info", "children"), Input("models-meta", "filename"),
          State("models-meta", "contents"))
def meta_info(filename, contents):
    return _file_info(filename, contents)


@callback(Output("models-dataset-info", "children"), Input("models-dataset", "filename"),
          State("models-dataset", "contents"))
def dataset_info(filename, contents):
    return _file_info(filename, contents)


def _file_info(filename: str | None, contents: str | None) -> str:
    if not filename:
        return ""
    data = decode_upload(contents)
    return f"Ready: {filename} ({human_bytes(len(data) if data is not None else None)})"


@callback(Output("models-upload-status", "children"), Output("models-name-error", "children"),
          Output("models-main-error", "children"), Output("models-meta-error", "children"),
          Output("models-refresh", "data", allow_duplicate=True),
          Input("models-upload", "n_clicks"),
          State("models-project", "value"), State("models-name", "value"),
          State("models-format", "value"),
          State("models-main", "filename"), State("models-main", "contents"),
          State("models-meta", "filename"), State("models-meta", "contents"),
          State("models-refresh", "data"), prevent_initial_call=True)
def upload_model(_clicks, project, name, fmt, main_name, main_contents, meta_name,
                 meta_contents, refresh):
    spec = FORMATS.get(fmt, FORMATS["safetensors"])
    (main_field, main_label, _), (meta_field, meta_label, _) = spec["main"], spec["meta"]
    errors = {"name": "" if (name or "").strip() else "Give the model a name.",
              "main": "" if main_name else f"Choose the {main_label} file.",
              "meta": "" if meta_name else f"Choose the {meta_label} file."}
    main_bytes, meta_bytes = decode_upload(main_contents), decode_upload(meta_contents)
    if main_name and main_bytes is None:
        errors["main"] = "The browser could not read this file; choose it again."
    if meta_name and meta_bytes is None:
        errors["meta"] = "The browser could not read this file; choose it again."
    if any(errors.values()):
        return None, errors["name"], errors["main"], errors["meta"], dash.no_update
    try:
        with client() as api:
            model = api.upload_model(project, name.strip(), {
                main_field: (main_name, main_bytes), meta_field: (meta_name, meta_bytes)})
    except ApiError as exc:
        placed = field_errors(exc, {"name": "name", main_field: "main", meta_field: "meta",
                                    "spec": "meta", "config": "meta", "architecture": "meta"})
        return (alert(placed["form"]) if "form" in placed else None, placed.get("name", ""),
                placed.get("main", ""), placed.get("meta", ""), dash.no_update)
    done = alert(f"Uploaded model “{model['name']}” ({human_bytes(model.get('size_bytes'))}).",
                 kind="info")
    return done, "", "", "", (refresh or 0) + 1


@callback(Output("models-dataset-status", "children"),
          Output("models-dataset-error", "children"),
          Output("models-refresh", "data", allow_duplicate=True),
          Input("models-dataset-upload", "n_clicks"),
          State("models-project", "value"), State("models-dataset", "filename"),
          State("models-dataset", "contents"), State("models-refresh", "data"),
          prevent_initial_call=True)
def upload_dataset(_clicks, project, filename, contents, refresh):
    if not filename:
        return None, "Choose a .zip file first.", dash.no_update
    data = decode_upload(contents)
    if data is None:
        return None, "The browser could not read this file; choose it again.", dash.no_update
    try:
        with client() as api:
            dataset = api.upload_dataset(project, filename, data)
    except ApiError as exc:
        placed = field_errors(exc, {"file": "dataset", "manifest": "dataset", "zip": "dataset"})
        return (alert(placed["form"]) if "form" in placed else None,
                placed.get("dataset", ""), dash.no_update)
    done = alert(f"Uploaded dataset “{dataset['name']}” with {dataset['n']} instances.",
                 kind="info")
    return done, "", (refresh or 0) + 1


def _modalities_of_model(model: dict) -> str:
    return ", ".join(f"{m['name']} ({m['kind']} {list(m['shape'])})"
                     for m in model.get("spec", {}).get("modalities", []))


def _classes_of_model(model: dict) -> str:
    classes = model.get("spec", {}).get("classes", [])
    shown = ", ".join(classes[:6]) + (f", … ({len(classes)} in all)" if len(classes) > 6 else "")
    return shown


def _delete_button(kind: str, item: dict) -> html.Button:
    return html.Button("Delete", id={"type": "models-delete", "kind": kind, "id": item["id"],
                                     "name": item["name"]},
                       className="btn btn-danger btn-small")


def _models_table(models: list[dict], project: int) -> Any:
    if not models:
        return html.P("No models in this project yet.", className="muted")
    header = html.Tr([html.Th(h) for h in ("Name", "Format", "Modalities", "Classes",
                                           "Accuracy", "Size", "Added", "")])
    rows = []
    for m in models:
        smooth = m.get("smooth")
        fmt = m["format"] + (f" · {m['architecture']}" if m.get("architecture") else "")
        rows.append(html.Tr([
            html.Td([html.B(m["name"]), html.Div(m.get("description") or "", className="muted"),
                     html.Div("ReLU: Hessian maps empty, use log_softmax", className="warn")
                     if smooth is False else None]),
            html.Td(fmt), html.Td(_modalities_of_model(m)), html.Td(_classes_of_model(m)),
            html.Td("—" if m.get("accuracy") is None else f"{m['accuracy']:.1%}"),
            html.Td(human_bytes(m.get("size_bytes"))),
            html.Td(str(m.get("created_at", ""))[:10]),
            html.Td(html.Div(className="row-actions", children=[
                dcc.Link("Explore", href=f"/instance?project={project}&model={m['id']}",
                         className="btn btn-small"),
                _delete_button("model", m)])),
        ]))
    return html.Table([html.Thead(header), html.Tbody(rows)], className="table",
                      id="models-table")


def _datasets_table(datasets: list[dict], project: int) -> Any:
    if not datasets:
        return html.P("No datasets in this project yet.", className="muted")
    header = html.Tr([html.Th(h) for h in ("Name", "Instances", "Modalities", "Labels", "Size",
                                           "Added", "")])
    rows = []
    for d in datasets:
        modalities = ", ".join(f"{k} {list(v['shape'])} {v['dtype']}"
                               for k, v in d.get("modalities", {}).items())
        counts = d.get("label_counts", {})
        labels = ", ".join(f"{k}: {v}" for k, v in list(counts.items())[:8]) + (
            " …" if len(counts) > 8 else "")
        rows.append(html.Tr([
            html.Td([html.B(d["name"]), html.Div(d.get("description") or "", className="muted")]),
            html.Td(f"{d['n']:,}"), html.Td(modalities), html.Td(labels),
            html.Td(human_bytes(d.get("size_bytes"))), html.Td(str(d.get("created_at", ""))[:10]),
            html.Td(html.Div(className="row-actions", children=[
                dcc.Link("Explore", href=f"/instance?project={project}&dataset={d['id']}",
                         className="btn btn-small"),
                _delete_button("dataset", d)])),
        ]))
    return html.Table([html.Thead(header), html.Tbody(rows)], className="table",
                      id="datasets-table")


@callback(Output("models-list", "children"), Output("datasets-list", "children"),
          Input("models-project", "value"), Input("models-refresh", "data"))
def list_items(project, _refresh):
    if project is None:
        return None, None
    try:
        with client() as api:
            models, datasets = api.models(project), api.datasets(project)
    except ApiError as exc:
        return alert(exc.message), alert(exc.message)
    return _models_table(models, project), _datasets_table(datasets, project)


@callback(Output("models-confirm", "displayed"), Output("models-confirm", "message"),
          Output("models-pending-delete", "data"),
          Input({"type": "models-delete", "kind": ALL, "id": ALL, "name": ALL}, "n_clicks"),
          prevent_initial_call=True)
def ask_delete(clicks):
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not any(t["value"] for t in ctx.triggered):
        return False, dash.no_update, dash.no_update
    message = (f"Delete the {trigger['kind']} “{trigger['name']}”? Its explanations and "
               "cached results go too. This cannot be undone.")
    return True, message, {"kind": trigger["kind"], "id": trigger["id"]}


@callback(Output("models-refresh", "data", allow_duplicate=True),
          Output("models-upload-status", "children", allow_duplicate=True),
          Input("models-confirm", "submit_n_clicks"), State("models-pending-delete", "data"),
          State("models-refresh", "data"), prevent_initial_call=True)
def confirm_delete(_submit, pending, refresh):
    if not pending:
        return dash.no_update, dash.no_update
    try:
        with client() as api:
            if pending["kind"] == "model":
                api.delete_model(pending["id"])
            else:
                api.delete_dataset(pending["id"])
    except ApiError as exc:
        return dash.no_update, alert(exc.message)
    return (refresh or 0) + 1, alert(f"Deleted the {pending['kind']}.", kind="info")


dash.register_page(__name__, path="/models", title="crosslens — models & data",
                   name="Models & data", layout=layout)
