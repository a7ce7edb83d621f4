"""Register the zoo's demo scenarios on first start (``settings.register_demos``).

One project per scenario (named after it), the admin user as its admin, the scenario's test
split as a dataset and its shipped models, all registered through the same validation and
storage path as user uploads (a dataset zip in scratch → ``register_dataset``; weights +
config → ``register_safetensors_model``). Idempotent: what is already registered (by project
and name) is skipped, so a restart costs a few queries. Cheap: no training, only the
shipped weights and the scenarios' deterministic data generators.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import safetensors.torch
from sqlalchemy import select

from backend.core.config import Settings
from backend.core.security import ensure_project, ensure_user, grant
from backend.db import Database, DatasetRecord, ModelRecord, Project
from backend.services import catalog
from backend.services.storage import Storage, file_sha256

log = logging.getLogger("crosslens.demos")
ADMIN_NAME = "admin"


def dataset_name(scenario: Any) -> str:
    return f"{scenario.title} — test split"[:128]


def write_dataset_zip(scenario: Any, dest: Path) -> Path:
    """The scenario's test split as a dataset zip in the upload format (DESIGN.md)."""
    data = scenario.dataset("test")
    tensors = {f"m_{name}": x.contiguous() for name, x in data.inputs.items()}
    tensors["labels"] = data.labels.contiguous()
    manifest = {
        "format": "crosslens-dataset", "version": 1, "name": scenario.name, "n": len(data),
        "modalities": {name: {"file": "data.safetensors", "key": f"m_{name}",
                              "kind": scenario.spec.modality(name).kind}
                       for name in data.inputs},
        "labels": {"file": "data.safetensors", "key": "labels"},
        "ids": {"file": "ids.json"} if data.ids is not None else None,
        "classes": list(scenario.spec.classes),
        "description": scenario.description[:2000],
    }
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("data.safetensors", safetensors.torch.save(tensors))
        if data.ids is not None:
            zf.writestr("ids.json", json.dumps(list(data.ids)))
    return dest


def register_demos(settings: Settings, db: Database,
                   scenarios: list[Any] | None = None) -> dict[str, int]:
    """Register every scenario (default: ``list_scenarios()``) not registered yet; returns
    counts of what was added. A scenario that fails is logged and skipped: demos never stop
    the API from starting."""
    if scenarios is None:
        from estimators.zoo.scenarios import list_scenarios

        scenarios = list_scenarios()
    added = {"projects": 0, "datasets": 0, "models": 0}
    started = time.monotonic()
    storage = Storage(settings.data_dir)
    for scenario in scenarios:
        try:
            _register_scenario(settings, db, storage, scenario, added)
        except Exception:  # a broken scenario must not keep the service down
            log.exception("could not register demo scenario %s", scenario.name)
    if any(added.values()):
        log.info("registered demos %s in %.1f s", added, time.monotonic() - started)
    return added


def _register_scenario(settings: Settings, db: Database, storage: Storage, scenario: Any,
                       added: dict[str, int]) -> None:
    with db.session() as session:
        if session.scalar(select(Project.id).where(Project.name == scenario.name)) is None:
            added["projects"] += 1
        project = ensure_project(session, scenario.name,
                                 f"{scenario.title}: {scenario.description}"[:500])
        grant(session, ensure_user(session, ADMIN_NAME, is_admin=True), project, "admin")
        pid = project.id
        have_data = session.scalar(select(DatasetRecord.id).where(
            DatasetRecord.project_id == pid, DatasetRecord.name == dataset_name(scenario)))
        have_models = set(session.scalars(select(ModelRecord.name).where(
            ModelRecord.project_id == pid)))
    if have_data is None:
        with storage.scratch() as scratch, db.session() as session:
            archive = write_dataset_zip(scenario, scratch / "demo.zip")
            catalog.register_dataset(settings, session, project_id=pid,
                                     name=dataset_name(scenario), archive=archive,
                                     archive_sha256=file_sha256(archive), scratch=scratch,
                                     description=scenario.description[:2000])
            added["datasets"] += 1
    for shipped in scenario.models:
        if shipped.name in have_models:
            continue
        with storage.scratch() as scratch, db.session() as session:
            weights = scratch / "weights.safetensors"
            shutil.copyfile(shipped.weights_path, weights)
            config = catalog.parse_model_config(shipped.config_path.read_text())
            catalog.register_safetensors_model(
                settings, session, project_id=pid, name=shipped.name, weights=weights,
                weights_sha256=file_sha256(weights), config=config,
                accuracy=shipped.test_accuracy,
                description=(f"{shipped.architecture} trained on {scenario.title}; test "
                             f"accuracy {shipped.test_accuracy:.1%}"))
            added["models"] += 1
