"""Demo scenarios are registered once, through the upload path, and are explorable."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend.core.config import Settings
from backend.services.demos import register_demos
from estimators.zoo.scenarios import get_scenario


def test_demo_scenario_is_registered_once_and_explorable(
        api: FastAPI, client: TestClient, settings: Settings, auth: dict[str, str]) -> None:
    scenario = get_scenario("synthetic-synergy")
    added = register_demos(settings, api.state.db, [scenario])
    assert added == {"projects": 1, "datasets": 1, "models": len(scenario.models)}
    assert register_demos(settings, api.state.db, [scenario]) == {
        "projects": 0, "datasets": 0, "models": 0}
    projects = client.get("/api/v1/projects", headers=auth).json()
    assert [p["name"] for p in projects] == ["synthetic-synergy"]
    pid = projects[0]["id"]
    models = client.get(f"/api/v1/models?project_id={pid}", headers=auth).json()
    assert {m["name"] for m in models} == {m.name for m in scenario.models}
    assert all(0 <= m["accuracy"] <= 1 and m["format"] == "safetensors" for m in models)
    (dataset,) = client.get(f"/api/v1/datasets?project_id={pid}", headers=auth).json()
    assert dataset["n"] == len(scenario.dataset("test"))
    best = max(models, key=lambda m: m["accuracy"])
    prediction = client.post("/api/v1/explain/predict", headers=auth, json={
        "model_id": best["id"], "dataset_id": dataset["id"], "index": 0}).json()
    assert prediction["classes"] == list(scenario.spec.classes)
    page = client.get(f"/api/v1/datasets/{dataset['id']}/instances?limit=200&model_id="
                      f"{best['id']}", headers=auth).json()
    accuracy = sum(i["correct"] for i in page["items"]) / len(page["items"])
    assert abs(accuracy - best["accuracy"]) < 0.15  # the shipped weights behave as reported
    with api.state.db.session() as session:
        from sqlalchemy import select

        from backend.db import Membership, User

        admin = session.scalar(select(User).where(User.name == "admin"))
        assert admin.is_admin
        assert session.scalar(select(Membership.role).where(
            Membership.user_id == admin.id, Membership.project_id == pid)) == "admin"
