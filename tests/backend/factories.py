"""Small real files for the backend-core tests: zoo model weights + configs, dataset zips,
and upload helpers that go through the HTTP API like a user would."""

from __future__ import annotations

import functools
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from estimators.model import ModalitySpec, ModelSpec
from estimators.zoo import registry
from estimators.zoo.architectures import embedding_path, modality_params, token_layout
from tests.backend.conftest import make_token
from tests.fixtures.models import VOCAB

N_CLASSES = 3


def tiny_spec() -> ModelSpec:
    """image [1, 8, 8] + text ids [6] -> 3 classes (the shape of ``cnn_text``)."""
    return ModelSpec(
        modalities=[
            ModalitySpec(name="image", kind="image", shape=(1, 8, 8),
                         display={"mean": [0.5], "std": [0.25]}),
            ModalitySpec(name="text", kind="text", shape=(6,), dtype="int64",
                         embedding=embedding_path("text"), vocab=VOCAB, pad_id=0, mask_id=1),
        ],
        classes=[f"c{i}" for i in range(N_CLASSES)],
    )


def model_files(architecture: str = "tensor_fusion", seed: int = 0,
                spec: ModelSpec | None = None) -> tuple[bytes, bytes]:
    """(safetensors weights, JSON config) of a freshly initialised zoo model."""
    spec = spec or tiny_spec()
    params = {"modalities": modality_params(spec), "n_classes": spec.n_classes, "dim": 8,
              "seed": seed}
    if architecture == "transformer":
        spec = spec.model_copy(update={"token_layout": token_layout(params)})
    module = registry.build(architecture, params)
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    weights = safetensors.torch.save(state)
    config = json.dumps({"architecture": architecture, "params": params,
                         "spec": spec.model_dump(mode="json")}).encode()
    return weights, config


def dataset_tensors(n: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(2, len(VOCAB), (n, 6), generator=gen)
    text[:, 4:] = 0  # two pad tokens at the end of every row
    return {"image": torch.rand(n, 1, 8, 8, generator=gen), "text": text,
            "labels": torch.arange(n) % N_CLASSES}


def dataset_zip(n: int = 12, *, tensors: dict[str, torch.Tensor] | None = None,
                manifest: dict[str, Any] | None = None,
                extra: dict[str, bytes] | None = None,
                compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A valid dataset zip (DESIGN.md manifest); ``manifest`` entries override defaults."""
    tensors = tensors if tensors is not None else dataset_tensors(n)
    body = {
        "format": "crosslens-dataset", "version": 1, "name": "tiny", "n": n,
        "modalities": {"image": {"file": "image.safetensors", "key": "image"},
                       "text": {"file": "text.safetensors", "key": "text"}},
        "labels": {"file": "labels.safetensors", "key": "labels"},
        "ids": None, "classes": [f"c{i}" for i in range(N_CLASSES)],
    }
    body.update(manifest or {})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr("manifest.json", json.dumps(body))
        for key in ("image", "text", "labels"):
            if key in tensors:
                zf.writestr(f"{key}.safetensors",
                            safetensors.torch.save({key: tensors[key].contiguous()}))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def project(api: FastAPI, name: str = "lab", *, user: str = "ed", role: str = "editor"
            ) -> tuple[int, dict[str, str]]:
    """A project with one member; returns (project id, that member's auth headers)."""
    token = make_token(api, user, project=name, role=role)
    headers = {"Authorization": f"Bearer {token}"}
    return project_id(api, name), headers


def project_id(api: FastAPI, name: str) -> int:
    from sqlalchemy import select

    from backend.db import Project

    with api.state.db.session() as session:
        return session.scalar(select(Project.id).where(Project.name == name))


def upload_model(client: TestClient, headers: dict[str, str], pid: int, *,
                 name: str = "m", architecture: str = "tensor_fusion", seed: int = 0,
                 files: dict[str, Any] | None = None) -> Any:
    if files is None:
        weights, config = model_files(architecture, seed)
        files = {"weights": ("m.safetensors", weights, "application/octet-stream"),
                 "config": ("m.json", config, "application/json")}
    return client.post("/api/v1/models", headers=headers,
                       data={"project_id": str(pid), "name": name}, files=files)


def upload_dataset(client: TestClient, headers: dict[str, str], pid: int,
                   data: bytes | None = None, *, name: str = "d") -> Any:
    data = dataset_zip() if data is None else data
    return client.post("/api/v1/datasets", headers=headers,
                       data={"project_id": str(pid), "name": name},
                       files={"file": ("d.zip", data, "application/zip")})


def stored_files(data_dir: Path) -> list[Path]:
    """Every file in blob storage and scratch space (should be none after a refusal)."""
    return sorted(p for sub in ("blobs", "tmp") for p in (data_dir / sub).rglob("*")
                  if p.is_file())


@functools.cache
def exported_cnn_text() -> bytes:
    """``tests.fixtures.models.cnn_text`` exported as a ``.pt2`` program the way the README
    says (keyword inputs, dynamic batch); exported once per test process (export is slow)."""
    from tests.fixtures.models import cnn_text
    from tests.fixtures.pt2 import export_pt2

    with tempfile.TemporaryDirectory() as tmp:
        return export_pt2(cnn_text(), Path(tmp) / "m.pt2").read_bytes()
