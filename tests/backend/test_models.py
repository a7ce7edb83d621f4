"""Model uploads (.safetensors + config, .pt2 + spec), listing, deletion and validation."""

from __future__ import annotations

import json

import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.core.config import Settings
from backend.db import ModelRecord
from tests.backend.factories import (
    dataset_zip,
    exported_cnn_text,
    model_files,
    project,
    stored_files,
    upload_dataset,
    upload_model,
)
from tests.fixtures.models import cnn_text_spec


def test_safetensors_upload_is_validated_stored_and_listed(
        api: FastAPI, client: TestClient, settings: Settings) -> None:
    pid, headers = project(api)
    response = upload_model(client, headers, pid, name="fusion")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "safetensors" and body["architecture"] == "tensor_fusion"
    assert body["project_id"] == pid and body["name"] == "fusion"
    assert body["smooth"] is True
    assert body["spec"]["classes"] == ["c0", "c1", "c2"]
    assert (settings.data_dir / "blobs" / body["sha256"][:2] / body["sha256"]).is_file()
    listed = client.get(f"/api/v1/models?project_id={pid}", headers=headers).json()
    assert [m["id"] for m in listed] == [body["id"]]
    assert client.get(f"/api/v1/models/{body['id']}", headers=headers).json() == body


def test_same_weights_uploaded_twice_share_one_stored_file(
        api: FastAPI, client: TestClient, settings: Settings) -> None:
    pid, headers = project(api)
    first = upload_model(client, headers, pid, name="a").json()
    second = upload_model(client, headers, pid, name="b").json()
    assert first["sha256"] == second["sha256"] and first["id"] != second["id"]
    assert len(stored_files(settings.data_dir)) == 1


def test_delete_removes_the_row_and_the_file_once_unused(
        api: FastAPI, client: TestClient, settings: Settings) -> None:
    pid, headers = project(api)
    a = upload_model(client, headers, pid, name="a").json()
    b = upload_model(client, headers, pid, name="b").json()
    assert client.delete(f"/api/v1/models/{a['id']}", headers=headers).status_code == 204
    assert len(stored_files(settings.data_dir)) == 1  # still used by b
    assert client.delete(f"/api/v1/models/{b['id']}", headers=headers).status_code == 204
    assert stored_files(settings.data_dir) == []
    assert client.get(f"/api/v1/models/{a['id']}", headers=headers).status_code == 404


def test_viewer_cannot_upload_or_delete(api: FastAPI, client: TestClient) -> None:
    pid, editor = project(api)
    _, viewer = project(api, user="vi", role="viewer")
    model = upload_model(client, editor, pid).json()
    refused = upload_model(client, viewer, pid)
    assert refused.status_code == 403 and "editor" in refused.json()["detail"]
    assert client.delete(f"/api/v1/models/{model['id']}", headers=viewer).status_code == 403


def test_unknown_architecture_is_refused_with_the_known_names(
        api: FastAPI, client: TestClient, settings: Settings) -> None:
    pid, headers = project(api)
    weights, config = model_files()
    bad = json.loads(config) | {"architecture": "resnet9000"}
    response = upload_model(client, headers, pid, files={
        "weights": ("m.safetensors", weights), "config": ("c.json", json.dumps(bad))})
    assert response.status_code == 422
    assert "resnet9000" in response.json()["detail"]
    assert "tensor_fusion" in response.json()["detail"]
    assert stored_files(settings.data_dir) == []


def test_weights_that_do_not_fit_the_config_are_refused(
        api: FastAPI, client: TestClient, settings: Settings) -> None:
    pid, headers = project(api)
    weights, _ = model_files("tensor_fusion")
    _, other_config = model_files("late_fusion")
    response = upload_model(client, headers, pid, files={
        "weights": ("m.safetensors", weights), "config": ("c.json", other_config)})
    assert response.status_code == 422
    assert "do not fit" in response.json()["detail"]
    assert stored_files(settings.data_dir) == []
    with api.state.db.session() as session:
        assert session.scalar(select(func.count()).select_from(ModelRecord)) == 0


def test_missing_config_or_mixed_fields_say_what_to_send(api: FastAPI,
                                                          client: TestClient) -> None:
    pid, headers = project(api)
    weights, _ = model_files()
    only_weights = upload_model(client, headers, pid,
                                files={"weights": ("m.safetensors", weights)})
    assert only_weights.status_code == 422 and "config" in only_weights.json()["detail"]
    nothing = client.post("/api/v1/models", headers=headers,
                          data={"project_id": str(pid), "name": "x"},
                          files={"description": ("d.txt", b"x")})
    assert nothing.status_code == 422


def test_pt2_program_is_stored_without_being_loaded(
        api: FastAPI, client: TestClient, settings: Settings) -> None:
    pid, headers = project(api)
    program = exported_cnn_text()
    response = upload_model(client, headers, pid, name="exported", files={
        "program": ("m.pt2", program), "spec": ("spec.json", cnn_text_spec().model_dump_json())})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "pt2" and body["architecture"] is None and body["smooth"] is None
    assert (settings.data_dir / "blobs" / body["sha256"][:2] / body["sha256"]).read_bytes() \
        == program


def test_pt2_without_a_valid_spec_is_refused(api: FastAPI, client: TestClient,
                                            settings: Settings) -> None:
    pid, headers = project(api)
    response = upload_model(client, headers, pid, files={
        "program": ("m.pt2", exported_cnn_text()), "spec": ("spec.json", b'{"modalities": []}')})
    assert response.status_code == 422 and "ModelSpec" in response.json()["detail"]
    assert stored_files(settings.data_dir) == []


def test_validate_runs_the_model_on_dataset_rows(api: FastAPI, client: TestClient) -> None:
    pid, headers = project(api)
    model = upload_model(client, headers, pid).json()
    dataset = upload_dataset(client, headers, pid).json()
    report = client.post(f"/api/v1/models/{model['id']}/validate?dataset_id={dataset['id']}",
                         headers=headers).json()
    assert report == {"ok": True, "deterministic": True, "errors": [], "warnings": []}
    spec_only = client.post(f"/api/v1/models/{model['id']}/validate", headers=headers).json()
    assert spec_only["ok"] is True


def test_validate_explains_a_dataset_that_does_not_fit(api: FastAPI,
                                                       client: TestClient) -> None:
    pid, headers = project(api)
    model = upload_model(client, headers, pid).json()
    wide = dataset_zip(tensors={"image": torch.rand(12, 1, 9, 9),
                                "text": torch.zeros(12, 6, dtype=torch.long),
                                "labels": torch.zeros(12, dtype=torch.long)})
    dataset = upload_dataset(client, headers, pid, wide).json()
    report = client.post(f"/api/v1/models/{model['id']}/validate?dataset_id={dataset['id']}",
                         headers=headers).json()
    assert report["ok"] is False
    assert "image: model expects [1, 8, 8], dataset has [1, 9, 9]" in report["errors"][0]

