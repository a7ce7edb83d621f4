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
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
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


class DataPidParams(_Params):
    """PID of every pair of modalities (and each against the rest when there are more than
    two); continuous modalities are discretised into ``n_clusters`` by k-means."""

    n_clusters: int = Field(default=10, ge=2, le=64)
    n_boot: int = Field(default=100, ge=0, le=1000, description="bootstrap resamples for CIs")
    seed: int = 0


class ModelPidParams(DataPidParams):
    model_id: int


class SelectionParams(DataPidParams):
    """Rank ``model_ids`` (2 to 16 models of the project) by how closely the PID of each
    model's predictions matches the PID of the data."""

    model_ids: list[int] = Field(min_length=2, max_length=16)
    n_boot: int = Field(default=0, ge=0, le=1000, description="bootstrap resamples for CIs")

    @model_validator(mode="after")
    def _distinct(self) -> SelectionParams:
        if len(set(self.model_ids)) != len(self.model_ids):
            raise ValueError("model_ids must be distinct")
        return self


class EmapParams(ModelParams):
    max_instances: int = Field(default=1000, ge=2, le=20000, description="EMAP costs N² "
                               "fusion evaluations, so it runs on the first N instances")


Output = Literal["logits", "log_softmax", "softmax"]
BaselineKind = Literal["zeros", "mean", "pad", "mask", "blur"]


class ShapleyParams(ModelParams):
    """Modality Shapley values explain the predicted class; absent modalities take their
    ``baseline`` (``replace="baseline"``) or the dataset's feature mean (``"mean"``)."""

    output: Output = "softmax"
    replace: Literal["baseline", "mean"] = "baseline"
    baselines: BaselineKind = "zeros"


class InteractionTypeParams(ShapleyParams):
    dominance: float = Field(default=0.8, gt=0.5, le=1.0)
    min_share: float = Field(default=0.1, gt=0.0, lt=1.0)
    synergy: float = Field(default=0.5, gt=0.0)


class RobustnessParams(ModelParams):
    """``levels``: noise scales (× the modality's standard deviation) or masked fractions in
    [0, 1]; default: the estimator's levels for the kind."""

    kind: Literal["noise", "mask"] = "noise"
    levels: tuple[float, ...] | None = Field(default=None, min_length=1, max_length=20)
    modalities: tuple[str, ...] | None = None
    baselines: BaselineKind = "zeros"
    seed: int = 0

    @model_validator(mode="after")
    def _levels_fit_kind(self) -> RobustnessParams:
        if self.levels is not None and any(lv < 0 for lv in self.levels):
            raise ValueError("levels must be non-negative")
        if self.kind == "mask" and self.levels is not None and any(lv > 1 for lv in
                                                                    self.levels):
            raise ValueError("mask levels are fractions of elements, in [0, 1]")
        return self


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


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


# -- PID of the data and of the model -------------------------------------------------------


def _pid_pairs(results: dict[str, Any]) -> dict[str, Any]:
    return {pair: res.to_dict() for pair, res in results.items()}


def labels_map(loaded: Loaded, chunk: MultimodalDataset, params: DataPidParams):
    return {"y": chunk.labels}


def data_pid_reduce(loaded: Loaded, parts: dict[str, Tensor], params: DataPidParams):
    """BROJA PID of the labels (``estimators.pid.dataset_pid``) per pair of modalities, in
    bits, with bootstrap intervals when ``n_boot > 0``."""
    dataset_pid = _estimator("estimators.pid:dataset_pid")
    results = dataset_pid(loaded.dataset, n_clusters=params.n_clusters, seed=params.seed,
                          n_boot=params.n_boot)
    return {"n": len(loaded.dataset), "target": "label", "unit": "bits",
            "pairs": _pid_pairs(results)}


def model_pid_map(loaded: Loaded, chunk: MultimodalDataset, params: ModelPidParams):
    model = loaded.models[0]
    return {"pred": predict(model, model_inputs(model, chunk.inputs)).argmax(-1),
            "y": chunk.labels}


def model_pid_reduce(loaded: Loaded, parts: dict[str, Tensor], params: ModelPidParams):
    """PID with the model's predicted class in place of the label
    (``estimators.pid.model_pid``, Liang et al. 2023), next to the data's PID on the same
    discretisation, so the UI can show which interactions the model learned of those in
    the data."""
    model = loaded.models[0]
    data = MultimodalDataset(model_inputs(model, loaded.dataset.inputs), loaded.dataset.labels)
    kwargs = {"n_clusters": params.n_clusters, "seed": params.seed, "n_boot": params.n_boot}
    learned = _estimator("estimators.pid:model_pid")(model, data, **kwargs)
    actual = _estimator("estimators.pid:dataset_pid")(data, **kwargs)
    return {"n": len(data), "target": "prediction", "unit": "bits",
            "accuracy": float((parts["pred"] == parts["y"]).float().mean()),
            "pairs": _pid_pairs(learned), "data": _pid_pairs(actual)}


# -- model selection ------------------------------------------------------------------------


def selection_map(loaded: Loaded, chunk: MultimodalDataset, params: SelectionParams):
    out = {f"pred{k}": predict(m, model_inputs(m, chunk.inputs)).argmax(-1)
           for k, m in enumerate(loaded.models)}
    return {**out, "y": chunk.labels}


def selection_reduce(loaded: Loaded, parts: dict[str, Tensor], params: SelectionParams):
    """Models ranked by the total-variation distance between the interaction profile of
    their predictions' PID and the data's (``estimators.selection.rank_models``, Liang et
    al. 2023 §5.3): the best match first."""
    kwargs = {"n_clusters": params.n_clusters, "seed": params.seed, "n_boot": params.n_boot}
    model_pid = _estimator("estimators.pid:model_pid")
    data_pid = _estimator("estimators.pid:dataset_pid")(loaded.dataset, **kwargs)
    learned = {}
    for k, model in enumerate(loaded.models):
        data = MultimodalDataset(model_inputs(model, loaded.dataset.inputs),
                                 loaded.dataset.labels)
        learned[str(k)] = model_pid(model, data, **kwargs)
    ranking = _estimator("estimators.selection:rank_models")(data_pid, learned)
    rows = []
    for match in ranking:
        k = int(match.name)
        rows.append({"model_id": params.model_ids[k], "name": loaded.model_names[k],
                     "distance": match.distance, "profile": match.profile,
                     "accuracy": float((parts[f"pred{k}"] == parts["y"]).float().mean()),
                     "pid": _pid_pairs(learned[str(k)])})
    return {"n": len(loaded.dataset), "ranking": rows, "data": _pid_pairs(data_pid),
            "distance": "total variation between interaction profiles [R,U1,U2,S]/total"}


# -- EMAP gap -------------------------------------------------------------------------------


def emap_map(loaded: Loaded, chunk: MultimodalDataset, params: EmapParams):
    model = loaded.models[0]
    return {"logits": predict(model, model_inputs(model, chunk.inputs)), "y": chunk.labels}


def emap_reduce(loaded: Loaded, parts: dict[str, Tensor], params: EmapParams):
    """Accuracy of f against accuracy of its additive projection EMAP(f) (Hessel & Lee 2020)
    on the first ``max_instances`` instances: a gap near 0 means the model's non-additive
    interactions do not help on this data."""
    emap_logits = _estimator("estimators.emap:emap_logits")
    model = loaded.models[0]
    n = min(params.max_instances, len(loaded.dataset))
    inputs = {k: v[:n] for k, v in model_inputs(model, loaded.dataset.inputs).items()}
    # Two-stage models (encoders + fuse, like the zoo's): encode each modality once and
    # evaluate only the fusion on the N² pairs, not the whole model (a frozen MiniLM!).
    encoders = (_estimator("estimators.emap:Encoders").of(model)
                if isinstance(model, MultimodalModel) else None)
    with torch.inference_mode():
        projected = emap_logits(model, inputs, encoders=encoders)
    labels = parts["y"][:n]
    acc_f = accuracy(parts["logits"][:n], labels)
    acc_emap = accuracy(projected, labels)
    return {"n": n, "accuracy": acc_f, "emap_accuracy": acc_emap, "gap": acc_f - acc_emap,
            "accuracy_all": accuracy(parts["logits"], parts["y"]),
            "agreement": float((projected.argmax(-1)
                                == parts["logits"][:n].argmax(-1)).float().mean())}


# -- modality importance, interaction types, embedding -------------------------------------

_means_cache: dict[tuple[int, int], dict[str, Tensor]] = {}


def model_inputs(model: MultimodalModel, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """The model's modalities of a dataset batch, cast to the spec's dtypes (a dataset may
    carry more modalities than a model reads)."""
    missing = [m.name for m in model.spec.modalities if m.name not in inputs]
    if missing:
        raise ValueError(f"the dataset lacks modalities {missing} that the model needs")
    return {m.name: inputs[m.name].to(m.torch_dtype) for m in model.spec.modalities}


def dataset_means(loaded: Loaded, model: MultimodalModel) -> dict[str, Tensor]:
    """Feature-space means over the whole dataset (not the chunk), cached per worker."""
    key = (id(model), id(loaded.dataset))
    if key not in _means_cache:
        feature_means = _estimator("estimators.attribution:feature_means")
        if len(_means_cache) > 8:
            _means_cache.clear()
        _means_cache[key] = feature_means(model, model_inputs(model, loaded.dataset.inputs))
    return _means_cache[key]


def _shapley_kwargs(loaded: Loaded, model: MultimodalModel, params: ShapleyParams) -> dict:
    means = dataset_means(loaded, model) if params.replace == "mean" else None
    return {"output": params.output, "replace": params.replace,
            "baselines": params.baselines, "means": means}


def importance_map(loaded: Loaded, chunk: MultimodalDataset, params: ShapleyParams):
    model = loaded.models[0]
    inputs = model_inputs(model, chunk.inputs)
    predicted = model(inputs).argmax(-1)
    modality_shapley = _estimator("estimators.ablation:modality_shapley")
    phi = modality_shapley(model, inputs, target=predicted,
                           **_shapley_kwargs(loaded, model, params)).values
    return {"phi": phi}


def importance_reduce(loaded: Loaded, parts: dict[str, Tensor], params: ShapleyParams):
    """Exact modality Shapley values (``estimators.ablation.modality_shapley``) for each
    instance's predicted class, summarised as the mean and mean absolute value per
    modality (the dataset summary of ``estimators.ablation.modality_importance``)."""
    names = loaded.models[0].spec.names
    phi = parts["phi"].double()
    return {"modalities": names, "n": int(phi.shape[0]), "output": params.output,
            "mean": {n: float(phi[:, m].mean()) for m, n in enumerate(names)},
            "mean_abs": {n: float(phi[:, m].abs().mean()) for m, n in enumerate(names)}}


def types_map(loaded: Loaded, chunk: MultimodalDataset, params: InteractionTypeParams):
    model = loaded.models[0]
    inputs = model_inputs(model, chunk.inputs)
    logits = model(inputs)
    predicted = logits.argmax(-1)
    interaction_types = _estimator("estimators.interaction_types:interaction_types")
    res = interaction_types(model, inputs, target=predicted,
                            **_shapley_kwargs(loaded, model, params),
                            dominance=params.dominance, min_share=params.min_share,
                            synergy=params.synergy)
    types = _estimator("estimators.interaction_types:TYPES")
    names = model.spec.names
    return {"type": torch.tensor([types.index(t) for t in res.types]),
            "dominant": torch.tensor([-1 if d is None else names.index(d)
                                      for d in res.dominant]),
            "shapley": res.shapley, "shares": res.shares, "interaction": res.interaction,
            "synergistic": res.synergistic.to(torch.int64), "predicted": predicted,
            "label": chunk.labels, "log_probs": torch.log_softmax(logits, -1)}


def _types_per_instance(loaded: Loaded, parts: dict[str, Tensor]) -> dict[str, Any]:
    types = _estimator("estimators.interaction_types:TYPES")
    names = loaded.models[0].spec.names
    return {"type": [types[i] for i in parts["type"].tolist()],
            "dominant": [None if i < 0 else names[i] for i in parts["dominant"].tolist()],
            "synergistic": [bool(v) for v in parts["synergistic"].tolist()],
            "predicted": parts["predicted"].tolist(), "label": parts["label"].tolist()}


def types_reduce(loaded: Loaded, parts: dict[str, Tensor], params: InteractionTypeParams):
    """Per-instance dominance / complement / conflict (+ synergy flag) from
    ``estimators.interaction_types`` and their mix over the dataset."""
    types = _estimator("estimators.interaction_types:TYPES")
    names = loaded.models[0].spec.names
    per = _types_per_instance(loaded, parts)
    n = len(per["type"])
    counts = {t: per["type"].count(t) for t in types}
    dominant_by = {m: sum(1 for d in per["dominant"] if d == m) for m in names}
    rule = _estimator("estimators.interaction_types:RULE").format(
        dominance=params.dominance, min_share=params.min_share, synergy=params.synergy)
    return {"n": n, "modalities": names, "types": list(types), "counts": counts,
            "fractions": {t: c / n for t, c in counts.items()},
            "dominant_counts": dominant_by,
            "synergistic": sum(per["synergistic"]), "rule": rule,
            "mean_shares": {m: float(parts["shares"][:, i].mean())
                            for i, m in enumerate(names)},
            "instances": {**per, "shares": parts["shares"].tolist()}}


def embedding_reduce(loaded: Loaded, parts: dict[str, Tensor], params: InteractionTypeParams):
    """A 2-D map of the instances by how the model treats them: the first two principal
    components of each instance's profile (modality Shapley shares, pure interaction term
    relative to the output change, log-probabilities), standardised per column. Instances
    near each other are explained alike; points carry type, label and prediction."""
    change = parts["shapley"].sum(1, keepdim=True).abs().clamp_min(1e-6)
    profile = torch.cat([parts["shares"], parts["interaction"].unsqueeze(1) / change,
                         parts["log_probs"].clamp_min(-20.0)], dim=1).double()
    profile = (profile - profile.mean(0)) / profile.std(0).clamp_min(1e-9)
    _, sing, v = torch.linalg.svd(profile, full_matrices=False)
    coords = profile @ v[:2].T
    if coords.shape[1] < 2:
        coords = torch.cat([coords, torch.zeros(coords.shape[0], 2 - coords.shape[1],
                                                dtype=coords.dtype)], dim=1)
    var = (sing**2) / (sing**2).sum().clamp_min(1e-12)
    return {"n": int(coords.shape[0]), "x": coords[:, 0].tolist(), "y": coords[:, 1].tolist(),
            "explained_variance": [float(v) for v in var[:2]],
            "features": ["shares", "interaction", "log_probs"],
            **_types_per_instance(loaded, parts)}


# -- robustness -----------------------------------------------------------------------------


def robustness_map(loaded: Loaded, chunk: MultimodalDataset, params: RobustnessParams):
    model = loaded.models[0]
    return {"logits": model(model_inputs(model, chunk.inputs)), "y": chunk.labels}


def robustness_reduce(loaded: Loaded, parts: dict[str, Tensor], params: RobustnessParams):
    """Accuracy as one modality at a time is corrupted more and more
    (``estimators.ablation.robustness_curve``: Gaussian noise of level × the modality's
    feature standard deviation over the dataset, or a masked fraction of its elements)."""
    model = loaded.models[0]
    data = MultimodalDataset(model_inputs(model, loaded.dataset.inputs), loaded.dataset.labels)
    robustness_curve = _estimator("estimators.ablation:robustness_curve")
    curves = robustness_curve(model, data, modalities=params.modalities, kind=params.kind,
                              levels=params.levels, baselines=params.baselines,
                              seed=params.seed)
    return {"kind": curves.kind, "levels": curves.levels, "clean": curves.clean,
            "accuracy": {n: [float(v) for v in acc] for n, acc in curves.accuracy.items()},
            "n": len(data)}


# -- registry -------------------------------------------------------------------------------

ANALYSES: dict[str, Analysis] = {a.kind: a for a in (
    Analysis("data_pid", "PID of the data", DataPidParams, labels_map, data_pid_reduce,
             requires=("estimators.pid:dataset_pid",), chunk_size=5000, map_share=0.1),
    Analysis("model_pid", "PID of the model", ModelPidParams, model_pid_map, model_pid_reduce,
             requires=("estimators.pid:model_pid", "estimators.pid:dataset_pid"),
             map_share=0.3),
    Analysis("emap", "EMAP gap", EmapParams, emap_map, emap_reduce,
             requires=("estimators.emap:emap_logits",), map_share=0.3),
    Analysis("modality_importance", "modality importance", ShapleyParams, importance_map,
             importance_reduce, requires=("estimators.ablation:modality_shapley",
                                          "estimators.attribution:feature_means"),
             chunk_size=200),
    Analysis("interaction_types", "interaction types", InteractionTypeParams, types_map,
             types_reduce, requires=("estimators.interaction_types:interaction_types",),
             chunk_size=200),
    Analysis("embedding", "instance map", InteractionTypeParams, types_map, embedding_reduce,
             requires=("estimators.interaction_types:interaction_types",), chunk_size=200),
    Analysis("model_selection", "model selection", SelectionParams, selection_map,
             selection_reduce, requires=("estimators.selection:rank_models",
                                         "estimators.pid:model_pid"), map_share=0.3),
    Analysis("robustness", "robustness curves", RobustnessParams, robustness_map,
             robustness_reduce, requires=("estimators.ablation:robustness_curve",),
             map_share=0.2),
)}


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
            hashes[mid] = importlib.import_module("backend.services.catalog").model_fingerprint(
                model)
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

