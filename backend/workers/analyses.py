"""The dataset-level analyses a job can run, each a *map* over chunks of instances plus one
*reduce* over their concatenated outputs.

The map step holds everything that is per instance (forward passes, features, per-instance
estimators), so it scales with workers and reports real progress; the reduce step holds what
needs the whole dataset at once (PID from samples, the EMAP projection, rankings). Every number
comes from ``estimators``: an analysis whose estimator has not landed is listed in ``PLANNED``
and refused at submit with a 422 that says so, never answered with made-up values.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from torch import Tensor

from backend.core.config import Settings
from backend.db import Database, DatasetRecord, ModelRecord
from backend.workers.tasks import Described, Loaded
from estimators.data import MultimodalDataset
from estimators.model import MultimodalModel

# -- parameters -----------------------------------------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_id: int


class ModelParams(_Params):
    model_id: int


class PidParams(_Params):
    """``modalities``: the pair to decompose (default: the first two of the dataset)."""

    modalities: tuple[str, str] | None = None
    n_clusters: int = Field(default=8, ge=2, le=64,
                            description="clusters per modality when features are continuous")
    n_boot: int = Field(default=100, ge=0, le=1000, description="bootstrap resamples for CIs")
    seed: int = 0


class DataPidParams(PidParams):
    model_id: int | None = Field(
        default=None, description="only to turn token ids into features (its embedding layer)")


class ModelPidParams(PidParams):
    model_id: int


class EmapParams(ModelParams):
    max_instances: int = Field(default=1000, ge=2, le=20000, description="EMAP costs N² "
                               "fusion evaluations, so it runs on the first N instances")


# -- the analysis type ----------------------------------------------------------------------


MapFn = Callable[[Loaded, MultimodalDataset, Any], dict[str, Tensor]]
ReduceFn = Callable[[Loaded, dict[str, Tensor], Any], dict[str, Any]]


@dataclass(frozen=True)
class Analysis:
    """One job kind: its parameters, the estimators it needs, and its map/reduce steps."""

    kind: str
    label: str
    params: type[_Params]
    map: MapFn
    reduce: ReduceFn
    requires: tuple[str, ...] = ()  # "module:function" of estimators it calls
    chunk_size: int = 250
    map_share: float = 0.9  # fraction of the progress bar the chunks fill
    inference_only: bool = True

    def inputs(self, params: Any) -> tuple[list[int], int]:
        """Model ids and the dataset id a request refers to."""
        ids = getattr(params, "model_ids", None)
        if ids is None:
            single = getattr(params, "model_id", None)
            ids = [] if single is None else [single]
        return list(ids), params.dataset_id

    def unavailable(self) -> str | None:
        """Why this analysis cannot run in this build (an estimator missing), else None."""
        return missing_estimators(self.requires)

    def check(self, params: Any, described: Described) -> str | None:
        """A request problem only visible once the inputs are known (else None)."""
        if described.n < 2:
            return "the dataset needs at least 2 instances"
        return None

    def chunks(self, n: int, params: Any) -> list[tuple[int, int]]:
        return [(s, min(n, s + self.chunk_size)) for s in range(0, n, self.chunk_size)]


_import_lock = threading.Lock()


def missing_estimators(requires: tuple[str, ...]) -> str | None:
    missing = []
    for ref in requires:
        module, _, name = ref.partition(":")
        try:
            with _import_lock:
                mod = importlib.import_module(module)
        except ImportError:
            missing.append(ref)
            continue
        if not hasattr(mod, name):
            missing.append(ref)
    if missing:
        return f"needs {', '.join(m.replace(':', '.') for m in missing)}, which this " \
               "build does not have yet"
    return None


def _estimator(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


# -- shared pieces --------------------------------------------------------------------------


def predict(model: MultimodalModel, inputs: dict[str, Tensor]) -> Tensor:
    """Logits ``[B, C]`` (inputs checked against the spec: a mismatch is a clear error)."""
    return model(inputs)


def modality_features(model: MultimodalModel | None, inputs: dict[str, Tensor],
                      name: str) -> Tensor:
    """One float vector per instance for modality ``name``: continuous inputs flattened;
    token ids as the mean of their embeddings over non-pad positions (ids themselves are
    categorical codes, not coordinates), which needs a model."""
    x = inputs[name]
    if x.is_floating_point():
        return x.reshape(x.shape[0], -1).float()
    if model is None:
        raise ValueError(f"modality {name!r} holds token ids; pass a model_id so its "
                         "embedding layer turns them into features")
    spec = model.spec.modality(name)
    emb = model.embed(inputs)[name].float()
    if spec.pad_id is None:
        return emb.mean(dim=1)
    mask = (x != spec.pad_id).unsqueeze(-1).float()
    return (emb * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def pair(spec_names: list[str], requested: tuple[str, str] | None) -> tuple[str, str]:
    if requested is None:
        if len(spec_names) < 2:
            raise ValueError("PID needs two modalities; this dataset has "
                             f"{len(spec_names)}")
        return spec_names[0], spec_names[1]
    a, b = requested
    for m in (a, b):
        if m not in spec_names:
            raise ValueError(f"no modality {m!r}; the dataset has {spec_names}")
    if a == b:
        raise ValueError("choose two different modalities")
    return a, b


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


# -- PID of the data and of the model -------------------------------------------------------


def _pid_map(loaded: Loaded, chunk: MultimodalDataset, params: PidParams,
             with_predictions: bool) -> dict[str, Tensor]:
    model = loaded.models[0] if loaded.models else None
    a, b = pair(chunk.names, params.modalities)
    out = {"x1": modality_features(model, chunk.inputs, a),
           "x2": modality_features(model, chunk.inputs, b), "y": chunk.labels}
    if with_predictions:
        assert model is not None
        out["pred"] = predict(model, chunk.inputs).argmax(-1)
    return out


def _pid_json(result: Any, a: str, b: str, n: int, target: str) -> dict[str, Any]:
    return {**result.to_dict(), "modalities": [a, b], "n": n, "target": target,
            "unit": "bits"}


def data_pid_map(loaded: Loaded, chunk: MultimodalDataset, params: DataPidParams):
    return _pid_map(loaded, chunk, params, with_predictions=False)


def data_pid_reduce(loaded: Loaded, parts: dict[str, Tensor], params: DataPidParams):
    a, b = pair(loaded.dataset.names, params.modalities)
    pid_from_samples = _estimator("estimators.pid:pid_from_samples")
    res = pid_from_samples(parts["x1"].numpy(), parts["x2"].numpy(), parts["y"].numpy(),
                           n_clusters=params.n_clusters, seed=params.seed,
                           n_boot=params.n_boot)
    return _pid_json(res, a, b, len(parts["y"]), "label")


def model_pid_map(loaded: Loaded, chunk: MultimodalDataset, params: ModelPidParams):
    return _pid_map(loaded, chunk, params, with_predictions=True)


def model_pid_reduce(loaded: Loaded, parts: dict[str, Tensor], params: ModelPidParams):
    """PID of (X1, X2; Ŷ) with Ŷ the model's predicted class (Liang et al. 2023, "model
    PID"), next to the data's PID of (X1, X2; Y) on the same features and clusters."""
    a, b = pair(loaded.dataset.names, params.modalities)
    pid_from_samples = _estimator("estimators.pid:pid_from_samples")
    x1, x2 = parts["x1"].numpy(), parts["x2"].numpy()
    kwargs = {"n_clusters": params.n_clusters, "seed": params.seed, "n_boot": params.n_boot}
    model = pid_from_samples(x1, x2, parts["pred"].numpy(), **kwargs)
    data = pid_from_samples(x1, x2, parts["y"].numpy(), **kwargs)
    out = _pid_json(model, a, b, len(parts["y"]), "prediction")
    out["data"] = _pid_json(data, a, b, len(parts["y"]), "label")
    out["accuracy"] = float((parts["pred"] == parts["y"]).float().mean())
    return out


# -- EMAP gap -------------------------------------------------------------------------------


def emap_map(loaded: Loaded, chunk: MultimodalDataset, params: EmapParams):
    return {"logits": predict(loaded.models[0], chunk.inputs), "y": chunk.labels}


def emap_reduce(loaded: Loaded, parts: dict[str, Tensor], params: EmapParams):
    """Accuracy of f against accuracy of its additive projection EMAP(f) (Hessel & Lee 2020)
    on the first ``max_instances`` instances: a gap near 0 means the model's non-additive
    interactions do not help on this data."""
    emap_logits = _estimator("estimators.emap:emap_logits")
    n = min(params.max_instances, len(loaded.dataset))
    inputs = {k: v[:n] for k, v in loaded.dataset.inputs.items()}
    with torch.inference_mode():
        projected = emap_logits(loaded.models[0], inputs)
    labels = parts["y"][:n]
    acc_f = accuracy(parts["logits"][:n], labels)
    acc_emap = accuracy(projected, labels)
    return {"n": n, "accuracy": acc_f, "emap_accuracy": acc_emap, "gap": acc_f - acc_emap,
            "accuracy_all": accuracy(parts["logits"], parts["y"]),
            "agreement": float((projected.argmax(-1)
                                == parts["logits"][:n].argmax(-1)).float().mean())}


# -- registry -------------------------------------------------------------------------------

ANALYSES: dict[str, Analysis] = {a.kind: a for a in (
    Analysis("data_pid", "PID of the data", DataPidParams, data_pid_map, data_pid_reduce,
             requires=("estimators.pid:pid_from_samples",), map_share=0.5),
    Analysis("model_pid", "PID of the model", ModelPidParams, model_pid_map, model_pid_reduce,
             requires=("estimators.pid:pid_from_samples",), map_share=0.5),
    Analysis("emap", "EMAP gap", EmapParams, emap_map, emap_reduce,
             requires=("estimators.emap:emap_logits",), map_share=0.3),
)}

# Kinds of the API contract whose estimators have not landed in this build.
PLANNED: dict[str, str] = {
    "interaction_types": "estimators.interaction_types",
    "modality_importance": "estimators.ablation",
    "robustness": "estimators.ablation",
    "model_selection": "estimators.selection",
    "embedding": "estimators.ablation",
}


# -- where models and datasets come from ----------------------------------------------------


_databases: dict[str, Database] = {}
_db_lock = threading.Lock()


def _database(url: str) -> Database:
    """One engine per worker process and database URL."""
    with _db_lock:
        if url not in _databases:
            _databases[url] = Database(url)
        return _databases[url]


@dataclass(frozen=True)
class CatalogSources:
    """Models and datasets registered in the catalog (``backend/services/catalog.py``),
    loaded on the worker from the shared database and data directory."""

    settings: Settings

    def describe(self, session: Session, project_id: int, model_ids: list[int],
                 dataset_id: int) -> Described:
        dataset = session.scalar(select(DatasetRecord).where(
            DatasetRecord.id == dataset_id, DatasetRecord.project_id == project_id))
        if dataset is None:
            raise LookupError(f"dataset {dataset_id} not found in project {project_id}")
        hashes, names = {}, {}
        for mid in model_ids:
            model = session.scalar(select(ModelRecord).where(
                ModelRecord.id == mid, ModelRecord.project_id == project_id))
            if model is None:
                raise LookupError(f"model {mid} not found in project {project_id}")
            hashes[mid] = model.sha256
            names[mid] = model.name
        return Described(n=dataset.n, model_hashes=hashes, dataset_hash=dataset.tensors_sha256,
                         model_names=names)

    def load_model(self, model_id: int) -> MultimodalModel:
        catalog = importlib.import_module("backend.services.catalog")
        with _database(self.settings.resolved_database_url).session() as session:
            return catalog.load_model(self.settings, session, model_id)

    def load_dataset(self, dataset_id: int) -> MultimodalDataset:
        catalog = importlib.import_module("backend.services.catalog")
        with _database(self.settings.resolved_database_url).session() as session:
            return catalog.load_dataset(self.settings, session, dataset_id)

