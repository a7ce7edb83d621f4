"""Instance explanations through the real API, checked against the estimators and the
models' known structure (late fusion has no cross-modal interaction)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend.core.config import Settings
from backend.services import catalog
from tests.backend.factories import (
    dataset_tensors,
    project,
    upload_dataset,
    upload_model,
)


@pytest.fixture
def setup(api: FastAPI, client: TestClient) -> dict:
    pid, headers = project(api)
    models = {arch: upload_model(client, headers, pid, name=arch, architecture=arch).json()
              for arch in ("tensor_fusion", "late_fusion", "transformer")}
    dataset = upload_dataset(client, headers, pid).json()
    return {"pid": pid, "headers": headers, "models": models, "dataset": dataset}


def _ask(client: TestClient, setup: dict, what: str, arch: str = "tensor_fusion",
         index: int = 3, **extra) -> object:
    body = {"model_id": setup["models"][arch]["id"], "dataset_id": setup["dataset"]["id"],
            "index": index, **extra}
    return client.post(f"/api/v1/explain/{what}", json=body, headers=setup["headers"])


def _local_model(api: FastAPI, setup: dict, arch: str):
    with api.state.db.session() as session:
        return catalog.load_model(api.state.settings, session, setup["models"][arch]["id"])


def test_predict_matches_the_model_and_is_cached(api: FastAPI, client: TestClient,
                                                 setup: dict, settings: Settings) -> None:
    body = _ask(client, setup, "predict").json()
    model = _local_model(api, setup, "tensor_fusion")
    t = dataset_tensors()
    with torch.no_grad():
        logits = model({"image": t["image"][3:4], "text": t["text"][3:4]})[0]
    np.testing.assert_allclose(body["logits"], logits.numpy(), rtol=1e-4, atol=1e-5)
    assert body["predicted"] == int(logits.argmax()) and body["label"] == 0
    assert body["classes"] == ["c0", "c1", "c2"] and abs(sum(body["probs"]) - 1) < 1e-4
    cached = list((settings.data_dir / "cache" / "explain").rglob("*.json"))
    assert len(cached) == 1
    assert _ask(client, setup, "predict").json() == body


def test_integrated_gradients_are_complete_and_target_null_is_the_prediction(
        client: TestClient, setup: dict) -> None:
    predicted = _ask(client, setup, "predict").json()
    body = _ask(client, setup, "attributions", method="integrated_gradients",
                baseline="zeros").json()
    assert body["target"] == predicted["predicted"]
    image, text = body["modalities"]["image"], body["modalities"]["text"]
    assert np.array(image["values"]).shape == (8, 8) and len(text["values"]) == 6
    assert image["kind"] == "image" and text["kind"] == "text"
    assert abs(body["delta"]) < 1e-2 * (abs(image["total"]) + abs(text["total"]) + 1)
    assert image["abs_total"] >= abs(image["total"])
    np.testing.assert_allclose(np.sum(image["values"]), image["total"], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
@pytest.mark.parametrize("baseline", ["mean", "pad"])
def test_other_methods_and_baselines_answer(client: TestClient, setup: dict, method: str,
                                            baseline: str) -> None:
    response = _ask(client, setup, "attributions", method=method, baseline=baseline,
                    target=1)
    assert response.status_code == 200, response.text
    assert response.json()["target"] == 1 and response.json()["method"] == method


def test_late_fusion_has_no_cross_modal_interaction(client: TestClient, setup: dict) -> None:
    body = _ask(client, setup, "interactions", arch="late_fusion", a="image", b="text",
                target=0).json()
    assert body["all_zero"] is True and "additive" in body["note"]
    assert len(body["matrix"]) == len(body["a_labels"])


def test_tensor_fusion_interactions_are_per_patch_and_token(client: TestClient,
                                                            setup: dict) -> None:
    body = _ask(client, setup, "interactions", a="image", b="text", top_k=5).json()
    matrix = np.array(body["matrix"])
    # 6 token positions, 2 of them [PAD]: the model's mean pooling leaves padding out, so
    # those columns are exactly zero and are not sent
    assert matrix.shape == (len(body["a_labels"]), 4) and body["b_labels"][0].startswith("0:")
    assert not any("[PAD]" in label for label in body["b_labels"])
    assert body["all_zero"] is False
    assert body["note"] == "2 padding token(s) with no interaction are not shown"
    assert len(body["top_pairs"]) == 5
    top = body["top_pairs"][0]
    assert abs(top["value"]) == pytest.approx(np.abs(matrix).max(), rel=1e-3)
    assert top["a_label"] == body["a_labels"][top["i"]]


def test_whatif_dropping_a_modality_changes_the_prediction_inputs(client: TestClient,
                                                                  setup: dict) -> None:
    body = _ask(client, setup, "whatif", drop=["image"], replace="mean").json()
    assert len(body["before"]) == len(body["after"]) == 3
    assert body["before"] != body["after"]
    assert body["predicted_before"] == int(np.argmax(body["before"]))
    nothing = _ask(client, setup, "whatif", drop=["audio"])
    assert nothing.status_code == 422 and "audio" in nothing.json()["detail"]


def test_attention_of_the_transformer_and_of_a_model_without_attention(
        client: TestClient, setup: dict) -> None:
    body = _ask(client, setup, "attention", arch="transformer", layer=0, head=0).json()
    assert body["available"] is True and body["n_layers"] >= 1
    n = len(body["labels"])
    assert np.array(body["map"]).shape == (n, n)
    np.testing.assert_allclose(np.array(body["map"]).sum(-1), 1, atol=1e-3)
    assert body["labels"][0] == "[CLS]"
    none = _ask(client, setup, "attention", arch="late_fusion").json()
    assert none["available"] is False and none["note"]


def test_bad_requests_are_clear_4xx(client: TestClient, setup: dict) -> None:
    assert _ask(client, setup, "predict", index=12).status_code == 404
    wrong_target = _ask(client, setup, "predict", target=7)
    assert wrong_target.status_code == 422 and "3 classes" in wrong_target.json()["detail"]
    same = _ask(client, setup, "interactions", a="image", b="image")
    assert same.status_code == 422
    bad_layer = _ask(client, setup, "attention", arch="transformer", layer=99)
    assert bad_layer.status_code == 422 and "layer" in bad_layer.json()["detail"]


def test_outsiders_cannot_explain_or_learn_that_the_model_exists(
        api: FastAPI, client: TestClient, setup: dict) -> None:
    from tests.backend.conftest import make_token

    outsider = {"Authorization": f"Bearer {make_token(api, 'eve', project='elsewhere')}"}
    body = {"model_id": setup["models"]["tensor_fusion"]["id"],
            "dataset_id": setup["dataset"]["id"], "index": 0}
    response = client.post("/api/v1/explain/predict", json=body, headers=outsider)
    assert response.status_code == 404
    assert "model" in response.json()["detail"]



def test_pt2_program_is_explained_through_the_sandbox_and_matches_eager(
        client: TestClient, setup: dict) -> None:
    """A toy model exported as a program: prediction and gradients computed in the sandbox
    host equal the eager model's in this process."""
    from estimators.attribution import attribute
    from tests.backend.factories import exported_cnn_text
    from tests.fixtures.models import cnn_text

    eager = cnn_text()
    program = exported_cnn_text()
    uploaded = upload_model(client, setup["headers"], setup["pid"], name="exported", files={
        "program": ("m.pt2", program), "spec": ("s.json", eager.spec.model_dump_json())})
    assert uploaded.status_code == 201, uploaded.text
    setup["models"]["pt2"] = uploaded.json()
    t = dataset_tensors()
    inputs = {"image": t["image"][3:4], "text": t["text"][3:4]}
    with torch.no_grad():
        logits = eager(inputs)[0]
    sandboxed = _ask(client, setup, "predict", arch="pt2")
    assert sandboxed.status_code == 200, sandboxed.text
    np.testing.assert_allclose(sandboxed.json()["logits"], logits.numpy(), rtol=1e-4,
                               atol=1e-5)
    grads = _ask(client, setup, "attributions", arch="pt2", method="saliency", target=0)
    assert grads.status_code == 200, grads.text
    local = attribute(eager, inputs, target=0, method="saliency").attributions["text"][0]
    np.testing.assert_allclose(grads.json()["modalities"]["text"]["values"],
                               local.sum(-1).numpy(), rtol=1e-3, atol=1e-6)
