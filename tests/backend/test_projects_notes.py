"""Projects (visibility, roles, members) and notes on instances."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.backend.conftest import make_token
from tests.backend.factories import project, upload_dataset, upload_model


def _headers(api: FastAPI, name: str, **kwargs) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(api, name, **kwargs)}"}


def test_creator_becomes_admin_and_users_see_only_their_projects(
        api: FastAPI, client: TestClient, auth: dict[str, str]) -> None:
    ana = _headers(api, "ana")
    bo = _headers(api, "bo")
    created = client.post("/api/v1/projects", json={"name": "cardio", "description": "ECG"},
                          headers=ana)
    assert created.status_code == 201
    assert created.json() == {"id": created.json()["id"], "name": "cardio",
                              "description": "ECG", "role": "admin"}
    client.post("/api/v1/projects", json={"name": "derm"}, headers=bo)
    assert [p["name"] for p in client.get("/api/v1/projects", headers=ana).json()] == [
        "cardio"]
    assert {p["name"] for p in client.get("/api/v1/projects", headers=auth).json()} == {
        "cardio", "derm"}
    pid = created.json()["id"]
    assert client.get(f"/api/v1/projects/{pid}", headers=bo).status_code == 404
    duplicate = client.post("/api/v1/projects", json={"name": "cardio"}, headers=bo)
    assert duplicate.status_code == 409


def test_project_admins_manage_members_and_roles_take_effect(
        api: FastAPI, client: TestClient) -> None:
    ana = _headers(api, "ana")
    cy = _headers(api, "cy")
    pid = client.post("/api/v1/projects", json={"name": "p"}, headers=ana).json()["id"]
    added = client.post(f"/api/v1/projects/{pid}/members", json={"user": "cy",
                                                                  "role": "viewer"},
                        headers=ana)
    assert added.status_code == 200 and added.json()["role"] == "viewer"
    assert client.get(f"/api/v1/projects/{pid}", headers=cy).json()["role"] == "viewer"
    assert client.post(f"/api/v1/projects/{pid}/members", json={"user": "ana",
                                                                 "role": "viewer"},
                       headers=cy).status_code == 403
    refused = upload_dataset(client, cy, pid)
    assert refused.status_code == 403
    client.post(f"/api/v1/projects/{pid}/members", json={"user": "cy", "role": "editor"},
                headers=ana)
    assert upload_dataset(client, cy, pid).status_code == 201
    members = client.get(f"/api/v1/projects/{pid}/members", headers=cy).json()
    assert {(m["user"], m["role"]) for m in members} == {("ana", "admin"), ("cy", "editor")}
    unknown = client.post(f"/api/v1/projects/{pid}/members", json={"user": "zed",
                                                                    "role": "viewer"},
                          headers=ana)
    assert unknown.status_code == 404 and "crosslens users add zed" in unknown.json()["detail"]


def test_project_lists_of_models_and_datasets_are_scoped(api: FastAPI,
                                                         client: TestClient) -> None:
    pid, ed = project(api, "one", user="ed")
    other_pid, di = project(api, "two", user="di")
    upload_model(client, ed, pid)
    upload_dataset(client, di, other_pid)
    assert len(client.get("/api/v1/models", headers=ed).json()) == 1
    assert client.get("/api/v1/models", headers=di).json() == []
    assert client.get(f"/api/v1/models?project_id={pid}", headers=di).status_code == 404
    assert client.get("/api/v1/datasets", headers=ed).json() == []


def test_notes_are_written_by_editors_read_by_members_newest_first(
        api: FastAPI, client: TestClient) -> None:
    pid, ed = project(api, "lab", user="ed")
    _, viewer = project(api, "lab", user="vi", role="viewer")
    dataset = upload_dataset(client, ed, pid).json()
    model = upload_model(client, ed, pid).json()
    for text in ("first look", "looks like a conflict between image and text"):
        response = client.post("/api/v1/notes", headers=ed, json={
            "project_id": pid, "model_id": model["id"], "dataset_id": dataset["id"],
            "index": 3, "text": text})
        assert response.status_code == 201, response.text
    client.post("/api/v1/notes", headers=ed, json={
        "project_id": pid, "dataset_id": dataset["id"], "index": 4, "text": "other row"})
    notes = client.get(f"/api/v1/notes?project_id={pid}&dataset_id={dataset['id']}&index=3",
                       headers=viewer).json()
    assert [n["text"] for n in notes] == ["looks like a conflict between image and text",
                                          "first look"]
    assert notes[0]["author"] == "ed" and notes[0]["model_id"] == model["id"]
    assert notes[0]["created_at"].endswith(("Z", "+00:00"))
    refused = client.post("/api/v1/notes", headers=viewer, json={
        "project_id": pid, "dataset_id": dataset["id"], "index": 3, "text": "me too"})
    assert refused.status_code == 403


def test_notes_are_validated_and_hidden_from_outsiders(api: FastAPI,
                                                       client: TestClient) -> None:
    pid, ed = project(api, "lab", user="ed")
    other_pid, di = project(api, "other", user="di")
    dataset = upload_dataset(client, ed, pid).json()
    foreign = upload_dataset(client, di, other_pid).json()
    base = {"project_id": pid, "dataset_id": dataset["id"], "index": 0}
    assert client.post("/api/v1/notes", headers=ed,
                       json={**base, "text": ""}).status_code == 422
    assert client.post("/api/v1/notes", headers=ed,
                       json={**base, "text": "x" * 5001}).status_code == 422
    assert client.post("/api/v1/notes", headers=ed,
                       json={**base, "index": 12, "text": "x"}).status_code == 422
    # a dataset in a project the editor cannot see is "not found" (no existence leak)
    assert client.post("/api/v1/notes", headers=ed, json={
        **base, "dataset_id": foreign["id"], "text": "x"}).status_code == 404
    client.post("/api/v1/notes", headers=ed, json={**base, "text": "private"})
    assert client.get("/api/v1/notes", headers=di).json() == []
    assert client.get(f"/api/v1/notes?project_id={pid}", headers=di).status_code == 404


def test_models_datasets_notes_and_explanations_work_on_postgres(postgres_url: str,
                                                                 tmp_path) -> None:
    from backend.core.config import Settings
    from backend.main import create_app

    app = create_app(Settings(data_dir=tmp_path, database_url=postgres_url,
                              register_demos=False))
    try:
        with TestClient(app) as client:
            pid, ed = project(app, "pg-core", user="pg-ed")
            model = upload_model(client, ed, pid).json()
            dataset = upload_dataset(client, ed, pid).json()
            note = client.post("/api/v1/notes", headers=ed, json={
                "project_id": pid, "dataset_id": dataset["id"], "index": 2, "text": "pg"})
            assert note.status_code == 201, note.text
            assert client.get(f"/api/v1/notes?project_id={pid}&index=2",
                              headers=ed).json()[0]["text"] == "pg"
            prediction = client.post("/api/v1/explain/predict", headers=ed, json={
                "model_id": model["id"], "dataset_id": dataset["id"], "index": 2})
            assert prediction.status_code == 200
            assert client.delete(f"/api/v1/datasets/{dataset['id']}",
                                 headers=ed).status_code == 204
            assert client.get(f"/api/v1/notes?project_id={pid}", headers=ed).json() == []
        assert app.state.db.engine.dialect.name == "postgresql"
    finally:
        app.state.db.dispose()
