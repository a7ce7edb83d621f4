"""What runs on a Dask worker: load the model(s) and dataset of a job, run one chunk or the
final reduction of an analysis (``backend/workers/analyses.py``).

Workers get everything they need in a picklable ``JobContext``: the analysis, its validated
parameters, the ids and content hashes of the model(s) and dataset, and the ``Sources`` that
load them (by default the catalog, reading the shared database and data directory). Loaded
models and datasets are cached per worker process by content hash, so the chunks of one job
(and of the next job on the same data) load them once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from pydantic import BaseModel
from sqlalchemy.orm import Session
from torch import Tensor

from estimators.data import MultimodalDataset
from estimators.model import MultimodalModel

CACHE_ENTRIES = 6


class Sources(Protocol):
    """Where models and datasets come from: ``describe`` runs in the API process (checks the
    ids belong to the project, returns content hashes and sizes); the loaders run on workers."""

    def describe(self, session: Session, project_id: int, model_ids: list[int],
                 dataset_id: int) -> Described: ...

    def load_model(self, model_id: int) -> MultimodalModel: ...

    def load_dataset(self, dataset_id: int) -> MultimodalDataset: ...


@dataclass(frozen=True)
class Described:
    """What the job service needs to know about a request's inputs without loading them."""

    n: int
    model_hashes: dict[int, str]
    dataset_hash: str
    model_names: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobContext:
    job_id: int
    analysis: Any  # analyses.Analysis (kept loose to avoid an import cycle)
    params: BaseModel
    model_ids: tuple[int, ...]
    dataset_id: int
    model_hashes: dict[int, str]
    dataset_hash: str
    model_names: dict[int, str]
    sources: Sources


@dataclass
class Loaded:
    models: list[MultimodalModel]
    dataset: MultimodalDataset
    model_names: list[str]


_cache: OrderedDict[tuple[str, int, str], Any] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(kind: str, ident: int, digest: str, load) -> Any:
    key = (kind, ident, digest)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = load(ident)
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return value


def _prepare_process() -> None:
    """Tiny models run far faster on one non-spinning thread; workers share cores."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def load(ctx: JobContext) -> Loaded:
    _prepare_process()
    models = [_cached("model", mid, ctx.model_hashes[mid], ctx.sources.load_model)
              for mid in ctx.model_ids]
    dataset = _cached("dataset", ctx.dataset_id, ctx.dataset_hash, ctx.sources.load_dataset)
    names = [ctx.model_names.get(mid, f"model {mid}") for mid in ctx.model_ids]
    return Loaded(models=models, dataset=dataset, model_names=names)


def run_chunk(ctx: JobContext, start: int, stop: int) -> dict[str, Tensor]:
    """The analysis' per-instance work on rows ``[start, stop)``; returns flat tensors with
    one leading row per instance (concatenated in order before the reduction)."""
    loaded = load(ctx)
    chunk = loaded.dataset.subset(torch.arange(start, stop))
    with torch.inference_mode(ctx.analysis.inference_only):
        part = ctx.analysis.map(loaded, chunk, ctx.params)
    return {k: v.detach().contiguous() for k, v in part.items()}


def run_reduce(ctx: JobContext, parts: dict[str, Tensor]) -> dict[str, Any]:
    """The dataset-wide step (PID, EMAP, ranking...) on the concatenated chunk outputs."""
    loaded = load(ctx)
    return ctx.analysis.reduce(loaded, parts, ctx.params)
