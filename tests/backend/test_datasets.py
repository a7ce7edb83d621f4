"""Dataset zips: upload, validation, listing, instance pages and instance views."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend.core.config import Settings
from tests.backend.factories import (
    dataset_tensors,
    dataset_zip,
    project,
    stored_files,
    upload_dataset,
    upload_model,
)


def test_upload_reports_rows_modalities_and_label_counts(api: FastAPI,
                                                         client: TestClient) -> None:
    pid, headers = project(api)
    response = upload_dataset(client, headers, pid, name="tiny test set")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["n"] == 12 and body["name"] == "tiny test set"
    assert body["modalities"] == {"image": {"shape": [1, 8, 8], "dtype": "float32"},
                                  "text": {"shape": [6], "dtype": "int64"}}
    assert body["label_counts"] == {"c0": 4, "c1": 4, "c2": 4}
    assert [d["id"] for d in client.get("/api/v1/datasets", headers=headers).json()] == [
        body["id"]]


def test_npy_members_are_read_without_pickle(api: FastAPI, client: TestClient) -> None:
    pid, headers = project(api)
    t = dataset_tensors()
    npy = io.BytesIO()
    np.save(npy, t["image"].numpy().astype(np.float64))
    data = dataset_zip(manifest={"modalities": {
        "image": {"file": "image.npy"}, "text": {"file": "text.safetensors", "key": "text"}}},
        extra={"image.npy": npy.getvalue()})
    body = upload_dataset(client, headers, pid, data).json()
    assert body["modalities"]["image"] == {"shape": [1, 8, 8], "dtype": "float32"}


@pytest.mark.parametrize(("tensors", "manifest", "message"), [
    ({**dataset_tensors(), "text": torch.zeros(11, 6, dtype=torch.long)}, {},
     "needs 12 rows"),
    ({**dataset_tensors(), "labels": torch.zeros(12)}, {}, "integer class indices"),
    ({**dataset_tensors(), "image": torch.zeros(12, 1, 8, 8, dtype=torch.complex64)}, {},
     "dtype"),
    ({**dataset_tensors(), "image": torch.full((12, 1, 8, 8), float("nan"))}, {}, "NaN"),
    (dataset_tensors(), {"format": "other"}, "crosslens-dataset"),
    (dataset_tensors(), {"n": 0}, "positive integer"),
    (dataset_tensors(), {"labels": {"file": "nope.safetensors", "key": "labels"}},
     "not in the zip"),
    (dataset_tensors(), {"modalities": {"image": {"file": "image.safetensors",
                                                  "key": "wrong"}}}, "no tensor 'wrong'"),
    (dataset_tensors(), {"classes": ["only one"]}, "covering every label"),
])
def test_invalid_datasets_are_refused_with_the_reason_and_leave_nothing(
        api: FastAPI, client: TestClient, settings: Settings, tensors: dict,
        manifest: dict, message: str) -> None:
    pid, headers = project(api)
    response = upload_dataset(client, headers, pid, dataset_zip(tensors=tensors,
                                                                manifest=manifest))
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert stored_files(settings.data_dir) == []
    assert client.get("/api/v1/datasets", headers=headers).json() == []


def test_object_npy_is_refused_without_unpickling(api: FastAPI, client: TestClient) -> None:
    pid, headers = project(api)
    npy = io.BytesIO()
    np.save(npy, np.array([{"a": 1}] * 12, dtype=object), allow_pickle=True)
    data = dataset_zip(manifest={"modalities": {"image": {"file": "image.npy"}}},
                       extra={"image.npy": npy.getvalue()})
    response = upload_dataset(client, headers, pid, data)
    assert response.status_code == 422 and "pickle" in response.json()["detail"]


def test_missing_manifest_is_refused(api: FastAPI, client: TestClient) -> None:
    pid, headers = project(api)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data.safetensors", b"x")
    response = upload_dataset(client, headers, pid, buf.getvalue())
    assert response.status_code == 422 and "manifest.json" in response.json()["detail"]


def test_instance_pages_filter_by_label_and_add_predictions(api: FastAPI,
                                                            client: TestClient) -> None:
    pid, headers = project(api)
    dataset = upload_dataset(client, headers, pid).json()
    url = f"/api/v1/datasets/{dataset['id']}/instances"
    page = client.get(f"{url}?offset=2&limit=3", headers=headers).json()
    assert page["total"] == 12
    assert [(i["index"], i["label"], i["predicted"]) for i in page["items"]] == [
        (2, 2, None), (3, 0, None), (4, 1, None)]
    only_ones = client.get(f"{url}?label=1", headers=headers).json()
    assert only_ones["total"] == 4 and {i["label"] for i in only_ones["items"]} == {1}
    model = upload_model(client, headers, pid).json()
    scored = client.get(f"{url}?limit=4&model_id={model['id']}", headers=headers).json()
    for item in scored["items"]:
        assert 0 <= item["predicted"] < 3 and 1 / 3 <= item["confidence"] <= 1
        assert item["correct"] == (item["predicted"] == item["label"])


def test_instance_view_is_ready_to_draw(api: FastAPI, client: TestClient) -> None:
    pid, headers = project(api)
    dataset = upload_dataset(client, headers, pid).json()
    model = upload_model(client, headers, pid).json()
    url = f"/api/v1/datasets/{dataset['id']}/instances/5"
    view = client.get(f"{url}?model_id={model['id']}", headers=headers).json()
    assert view["index"] == 5 and view["label"] == 2 and view["label_name"] == "c2"
    image, text = view["modalities"]["image"], view["modalities"]["text"]
    raw = dataset_tensors()
    assert image["kind"] == "image" and np.array(image["values"]).shape == (8, 8)
    # the model's display normalisation (mean 0.5, std 0.25) is undone for drawing
    np.testing.assert_allclose(image["values"], raw["image"][5, 0] * 0.25 + 0.5, atol=1e-5)
    assert text["ids"] == raw["text"][5, :4].tolist()  # pads dropped
    assert text["tokens"][0] in ("is", "it", "even", "odd", "seven", "big", "small", "a",
                                 "digit")
    bare = client.get(url, headers=headers).json()
    assert bare["modalities"]["text"]["kind"] == "text"
    assert client.get(f"/api/v1/datasets/{dataset['id']}/instances/12",
                      headers=headers).status_code == 404


def test_delete_dataset_removes_its_files(api: FastAPI, client: TestClient,
                                          settings: Settings) -> None:
    pid, headers = project(api)
    dataset = upload_dataset(client, headers, pid).json()
    assert len(stored_files(settings.data_dir)) == 2  # the zip and its normalised tensors
    assert client.delete(f"/api/v1/datasets/{dataset['id']}", headers=headers).status_code \
        == 204
    assert stored_files(settings.data_dir) == []


def test_ids_file_names_the_rows(api: FastAPI, client: TestClient) -> None:
    pid, headers = project(api)
    ids = [f"patient-{i}" for i in range(12)]
    data = dataset_zip(manifest={"ids": {"file": "ids.json"}},
                       extra={"ids.json": json.dumps(ids).encode()})
    dataset = upload_dataset(client, headers, pid, data).json()
    page = client.get(f"/api/v1/datasets/{dataset['id']}/instances?limit=2",
                      headers=headers).json()
    assert [i["id"] for i in page["items"]] == ["patient-0", "patient-1"]
