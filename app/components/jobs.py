"""Dataset-level analyses run as backend jobs: find earlier ones, follow progress, cancel.

The pages keep ``{kind: job}`` (``JobOut`` dicts) in a store; a ``dcc.Interval`` polls the
jobs that are not final and is switched off once all are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dash import html

from app.api_client import ApiClient
from app.components.urlstate import as_int, query_string

ANALYSES = {
    "data_pid": "PID of the data",
    "model_pid": "PID of the model",
    "emap": "EMAP gap",
    "interaction_types": "Interaction types",
    "modality_importance": "Modality importance",
    "robustness": "Robustness",
    "embedding": "Instance map",
}
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
RUN_ROLES = frozenset({"editor", "admin"})
VIEWER_MESSAGE = ("You are a viewer in this project: you can see the results others have run, "
                  "but running or cancelling analyses needs the editor role. Ask a project "
                  "admin if you need it.")


def can_run(role: str | None) -> bool:
    return role in RUN_ROLES


def project_role(projects: list[dict], project_id: int | None) -> str | None:
    return next((p.get("role") for p in projects if p["id"] == project_id), None)


def matches(job: Mapping[str, Any], kind: str, params: Mapping[str, Any]) -> bool:
    """The job is of ``kind`` and has every one of ``params`` (its others at their defaults
    or not: the newest such result is the one to show)."""
    if job.get("kind") != kind:
        return False
    stored = job.get("params") or {}
    return all(_same(stored.get(k), v) for k, v in params.items())


def _same(a: Any, b: Any) -> bool:
    """Lists (model ids) compare as sets: the ranking does not depend on their order."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return sorted(map(str, a)) == sorted(map(str, b))
    return a == b


def existing_jobs(jobs: list[dict], requests: Mapping[str, Mapping[str, Any]]) -> dict:
    """For each requested kind, the best earlier job (newest first in ``jobs``): a finished
    result beats one still running, which beats a failed or cancelled one."""
    rank = {"succeeded": 0, "running": 1, "queued": 1, "failed": 2, "cancelled": 3}
    found: dict[str, dict] = {}
    for kind, params in requests.items():
        candidates = [j for j in jobs if matches(j, kind, params)]
        if candidates:
            found[kind] = min(candidates, key=lambda j: rank.get(j["state"], 4))
    return found


def all_final(jobs: Mapping[str, Mapping[str, Any]] | None) -> bool:
    return all(j.get("state") in FINAL_STATES for j in (jobs or {}).values())


def refresh(api: ApiClient, jobs: Mapping[str, dict]) -> dict[str, dict]:
    """The same jobs with the state of those not final yet read again."""
    return {kind: job if job["state"] in FINAL_STATES else api.job(job["id"])
            for kind, job in jobs.items()}


def progress_row(label: str, job: Mapping[str, Any] | None, *, cancellable: bool,
                 cancel_id: dict) -> html.Div:
    """One analysis: name, progress bar with percent and state, the backend's message, and a
    cancel button while it runs (editors only)."""
    if job is None:
        return html.Div(className="job-row", children=[
            html.Span(label, className="job-name"),
            html.Span("not run yet", className="muted job-state")])
    state, progress = job["state"], float(job.get("progress") or 0.0)
    if state == "succeeded":
        progress = 1.0
    detail = job.get("error") if state == "failed" else job.get("message")
    children: list = [
        html.Span(label, className="job-name"),
        html.Div(className="job-bar", role="progressbar",
                 **{"aria-valuenow": round(progress * 100), "aria-valuemin": 0,
                    "aria-valuemax": 100, "aria-label": f"{label} progress"},
                 children=html.Div(className=f"job-fill job-{state}",
                                   style={"width": f"{progress:.0%}"})),
        html.Span(f"{progress:.0%} · {state}", className=f"job-state job-state-{state}"),
        html.Span(detail or "", className="muted job-message"),
    ]
    if cancellable and state not in FINAL_STATES:
        children.append(html.Button("Cancel", id=cancel_id, className="btn btn-small btn-danger"))
    return html.Div(children, className="job-row", **{"data-state": state})


def requests_for(model_id: int | None, dataset_id: int | None) -> dict[str, dict[str, Any]]:
    """The params of each analysis for this model and dataset (backend defaults otherwise);
    ``data_pid`` needs no model."""
    if dataset_id is None:
        return {}
    out: dict[str, dict[str, Any]] = {"data_pid": {"dataset_id": dataset_id}}
    if model_id is not None:
        out.update({kind: {"dataset_id": dataset_id, "model_id": model_id}
                    for kind in ANALYSES if kind != "data_pid"})
    return out


def clicked_instance_href(click: Mapping[str, Any] | None, project: int | None,
                          model: int | None, dataset: int | None) -> str | None:
    """The instance page of the point clicked in the instance map (its ``customdata`` is the
    instance index), keeping project, model and dataset; None when no point was clicked."""
    points = (click or {}).get("points") or []
    index = as_int(points[0].get("customdata")) if points else None
    if index is None:
        return None
    return "/instance" + query_string({"project": project, "model": model,
                                       "dataset": dataset, "instance": index})


def model_ids(value: Any) -> list[int]:
    """``"3-5-7"`` (URL) or a list → distinct ints, in order."""
    parts = value.split("-") if isinstance(value, str) else (value or [])
    ids = [as_int(p) for p in parts]
    return list(dict.fromkeys(i for i in ids if i is not None))


def ranking_rows(result: dict) -> list[dict]:
    """Table rows of the ranking, best match first."""
    return [{"rank": k + 1, "model": row["name"], "distance": f"{row['distance']:.3f}",
             "accuracy": f"{row['accuracy']:.1%}"} for k, row in enumerate(result["ranking"])]
