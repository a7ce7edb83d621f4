"""Every route of both processes is refused without a token, and every API route refuses (or
shows nothing of) a project to a signed-in user who is not a member of it.

Routes are enumerated from the apps themselves (FastAPI's routes, the Dash server's URL
map), so a route added later is covered without editing this file.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.backend.conftest import make_token
from tests.backend.factories import model_files, project, upload_dataset, upload_model

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI before included-router contexts
    iter_route_contexts = None

PUBLIC = {("GET", "/health")}
# Routes about the caller itself, not about a project: an outsider may use them, and they
# must not show the project (checked below).
USER_SCOPED = {("GET", "/api/v1/auth/me"), ("GET", "/api/v1/openapi.json"),
               ("GET", "/api/v1/projects"), ("POST", "/api/v1/projects")}
LISTS = ("models", "datasets", "notes", "jobs")


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    contexts = iter_route_contexts(app.routes) if iter_route_contexts else app.routes
    return sorted({(method, ctx.path) for ctx in contexts
                   if isinstance(getattr(ctx, "route", ctx), APIRoute)
                   for method in ctx.methods if method != "HEAD"})


@pytest.fixture
def secret(api: FastAPI, client: TestClient) -> dict[str, Any]:
    """A project with a model, a dataset and a note, plus an outsider's headers."""
    pid, editor = project(api, "secret", user="owner")
    model = upload_model(client, editor, pid, name="secret-model").json()
    dataset = upload_dataset(client, editor, pid, name="secret-data").json()
    client.post("/api/v1/notes", headers=editor, json={
        "project_id": pid, "dataset_id": dataset["id"], "index": 0, "text": "secret note"})
    outsider = {"Authorization": f"Bearer {make_token(api, 'eve', project='elsewhere')}"}
    return {"pid": pid, "model": model["id"], "dataset": dataset["id"], "outsider": outsider}


def _path(path: str, ids: dict[str, Any]) -> str:
    fill = {"project_id": ids["pid"], "model_id": ids["model"], "dataset_id": ids["dataset"],
            "index": 0}
    parts = []
    for part in path.split("/"):
        if part.startswith("{"):
            parts.append(str(fill.get(part.strip("{}"), 1)))
        else:
            parts.append(part)
    return "/".join(parts)


def _request(client: TestClient, method: str, path: str, ids: dict[str, Any],
             headers: dict[str, str]) -> Any:
    """The route called as a member would call it, aimed at the secret project."""
    explain = {"model_id": ids["model"], "dataset_id": ids["dataset"], "index": 0}
    explain_extra = {"interactions": {"a": "image", "b": "text"}, "whatif": {"drop": ["image"]}}
    bodies = {
        "/api/v1/notes": {"project_id": ids["pid"], "dataset_id": ids["dataset"], "index": 0,
                          "text": "x"},
        "/api/v1/jobs": {"project_id": ids["pid"], "kind": "data_pid",
                         "params": {"dataset_id": ids["dataset"]}},
        "/api/v1/projects": {"name": "eve's own"},
        "/api/v1/projects/{project_id}/members": {"user": "eve", "role": "admin"},
    }
    # every GET names the secret project (list routes filter by it; others ignore it)
    url = _path(path, ids) + (f"?project_id={ids['pid']}" if method == "GET" else "")
    if method == "POST" and path in ("/api/v1/models", "/api/v1/datasets"):
        weights, config = model_files()
        files = ({"weights": ("w.safetensors", weights), "config": ("c.json", config)}
                 if path.endswith("models") else {"file": ("d.zip", b"PK\x05\x06" + bytes(18))})
        return client.post(url, headers=headers, data={"project_id": str(ids["pid"]),
                                                        "name": "x"}, files=files)
    if path.startswith("/api/v1/explain/"):
        body = {**explain, **explain_extra.get(path.rsplit("/", 1)[-1], {})}
    else:
        body = bodies.get(path)
    return client.request(method, url, headers={**headers, "Content-Type": "application/json"},
                          content=None if body is None else json.dumps(body))


def test_every_api_route_refuses_requests_without_a_valid_token(
        api: FastAPI, client: TestClient, secret: dict[str, Any]) -> None:
    routes = _routes(api)
    assert ("POST", "/api/v1/explain/attributions") in routes
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        for headers in ({}, {"Authorization": "Bearer forged"}):
            response = _request(client, method, path, secret, headers)
            assert response.status_code == 401, (method, path, response.text)


def test_every_api_route_refuses_a_user_outside_the_project(
        api: FastAPI, client: TestClient, secret: dict[str, Any]) -> None:
    outsider = secret["outsider"]
    checked = 0
    for method, path in _routes(api):
        if (method, path) in PUBLIC:
            continue
        response = _request(client, method, path, secret, outsider)
        text = response.text
        if (method, path) in USER_SCOPED:
            assert response.status_code in (200, 201), (method, path, text)
            assert "secret" not in text or path.endswith("openapi.json"), (method, path, text)
        else:
            assert response.status_code in (403, 404), (method, path, response.status_code,
                                                        text)
            assert "secret" not in text, (method, path, text)
        checked += 1
    assert checked >= 25
    # lists without a project filter show the outsider nothing of the project
    for resource in LISTS[:3]:
        response = client.get(f"/api/v1/{resource}", headers=outsider)
        assert response.status_code == 200 and response.json() == [], resource


def test_every_ui_route_refuses_requests_without_a_session() -> None:
    from app.auth import PUBLIC_PREFIXES
    from app.config import UISettings
    from app.main import create_app as create_ui
    from tests.conftest import free_port

    ui = create_ui(UISettings(api_url=f"http://127.0.0.1:{free_port()}"))
    client = ui.server.test_client()
    rules = [r for r in ui.server.url_map.iter_rules() if r.endpoint != "static"]
    checked = 0
    for rule in rules:
        path = "/".join("x" if p.startswith("<") else p for p in rule.rule.split("/"))
        if path.startswith(PUBLIC_PREFIXES):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method)
            assert response.status_code in (401, 303), (path, method, response.status_code)
            if response.status_code == 303:
                assert response.headers["Location"].endswith("/login")
            checked += 1
    assert checked >= 5
