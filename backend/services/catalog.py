"""The catalog of uploaded models and datasets: rows with project checks, registration of
validated files, and loading by id (used by the API process and by Dask workers).

For the jobs worker::

    from backend.services.catalog import load_dataset, load_model
    with db.session() as session:
        model = load_model(settings, session, model_id)      # MultimodalModel | SandboxedModel
        data = load_dataset(settings, session, dataset_id)   # MultimodalDataset

Loaded objects are cached per process by content hash (files in storage never change), so
repeated instance views reuse the built model. Only ``.safetensors`` models are built in this
process; ``.pt2`` programs go to a sandbox host (``backend/services/sandbox.py``), never
``torch.export.load`` here, because loading a program runs pickle.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors
import torch
from fastapi import HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session
from torch import nn

from backend.core.config import Settings
from backend.core.security import require_role
from backend.db import DatasetRecord, ModelRecord, User
from backend.schemas import DatasetOut, ModalityInfo, ModelOut
from backend.services.storage import Storage, file_sha256
from backend.services.uploads import read_dataset_zip, save_normalised
from estimators.data import MultimodalDataset
from estimators.model import ModelSpec, MultimodalModel
from estimators.zoo.pretrained import BackboneUnavailable
from estimators.zoo.registry import external_sources

# Modules whose second derivative is zero almost everywhere: Hessian maps of a network built
# from them are empty (DESIGN.md, "Model contract").
PIECEWISE_LINEAR = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.Hardtanh, nn.Hardswish,
                    nn.Hardsigmoid, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)


class NotAvailable(RuntimeError):
    """A capability (e.g. the .pt2 sandbox) is not installed in this build."""


# -- rows with project checks ---------------------------------------------------------------


def model_row(session: Session, user: User, model_id: int, minimum: str = "viewer"
              ) -> ModelRecord:
    """The model row if ``user`` has at least ``minimum`` in its project; 404 when it does
    not exist or its project is invisible to the user (no existence leak), 403 when the role
    is too low."""
    row = session.get(ModelRecord, model_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model {model_id} not found")
    _check(user, row.project_id, minimum, f"model {model_id}")
    return row


def dataset_row(session: Session, user: User, dataset_id: int, minimum: str = "viewer"
                ) -> DatasetRecord:
    """Like ``model_row`` for datasets."""
    row = session.get(DatasetRecord, dataset_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {dataset_id} not found")
    _check(user, row.project_id, minimum, f"dataset {dataset_id}")
    return row


def _check(user: User, project_id: int, minimum: str, what: str) -> None:
    try:
        require_role(user, project_id, minimum)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_404_NOT_FOUND:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found") from exc
        raise


def visible_rows(session: Session, user: User, table: type, project_id: int | None
                 ) -> list[Any]:
    """Rows of ``table`` in the projects the user can see (one project when given)."""
    query = select(table).order_by(table.id)
    if project_id is not None:
        require_role(user, project_id, "viewer")
        query = query.where(table.project_id == project_id)
    elif not user.is_admin:
        query = query.where(table.project_id.in_([m.project_id for m in user.memberships]))
    return list(session.scalars(query))


def model_out(row: ModelRecord) -> ModelOut:
    return ModelOut(id=row.id, project_id=row.project_id, name=row.name, format=row.format,
                    architecture=row.architecture, spec=ModelSpec.model_validate(row.spec),
                    sha256=row.sha256, size_bytes=row.size_bytes, created_at=row.created_at,
                    accuracy=row.accuracy, smooth=row.smooth, description=row.description)


def dataset_out(row: DatasetRecord) -> DatasetOut:
    return DatasetOut(id=row.id, project_id=row.project_id, name=row.name, n=row.n,
                      modalities={k: ModalityInfo(**v) for k, v in row.modalities.items()},
                      label_counts=row.label_counts, sha256=row.sha256,
                      size_bytes=row.size_bytes, created_at=row.created_at,
                      description=row.description)


def blob_in_use(session: Session, sha256: str) -> bool:
    """Whether any row still references a blob (before deleting it from storage)."""
    return any(session.scalar(select(table.id).where(column == sha256).limit(1)) is not None
               for table, column in ((ModelRecord, ModelRecord.sha256),
                                     (DatasetRecord, DatasetRecord.sha256),
                                     (DatasetRecord, DatasetRecord.tensors_sha256)))


# -- building models from validated files ---------------------------------------------------


def is_smooth(module: nn.Module) -> bool:
    """False when the module contains piecewise-linear layers (ReLU, max-pool, ...), whose
    cross-modal Hessians vanish almost everywhere. Functional calls are not visible here,
    so True means "no piecewise-linear modules found"."""
    return not any(isinstance(m, PIECEWISE_LINEAR) for m in module.modules())


def build_safetensors_model(config: dict[str, Any], weights: Path) -> MultimodalModel:
    """Build a registered architecture from its config and load the weights (safetensors
    only). Raises ``KeyError`` (unknown architecture) or ``ValueError`` (config/weights do
    not fit)."""
    from estimators.zoo import registry

    model = registry.load_model(config, weights)
    model.requires_grad_(False)
    return model


def dry_run(model: MultimodalModel, inputs: dict[str, torch.Tensor] | None = None
            ) -> tuple[list[str], list[str], bool | None]:
    """Run the model on a small batch (the given one, or random inputs of the spec's shapes)
    twice: returns ``(errors, warnings, deterministic)``. Errors say what to fix."""
    spec = model.spec
    batch = inputs if inputs is not None else spec.example_inputs(2, seq_len=8)
    errors: list[str] = []
    warnings: list[str] = []
    try:
        with torch.no_grad():
            first = model(batch)
            second = model(batch)
    except Exception as exc:  # the user's model raised: report, do not crash
        errors.append(f"forward failed on inputs of the spec's shapes "
                      f"({_shapes(batch)}): {type(exc).__name__}: {exc}")
        return errors, warnings, None
    n = next(iter(batch.values())).shape[0]
    if not isinstance(first, torch.Tensor) or list(first.shape) != [n, spec.n_classes]:
        shape = list(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
        errors.append(f"the model must return logits [B, {spec.n_classes}] (one per class in "
                      f"the spec), got {shape}")
        return errors, warnings, None
    if not torch.isfinite(first).all():
        warnings.append("the model returns NaN or infinite logits on these inputs")
    deterministic = bool(torch.allclose(first, second, rtol=1e-5, atol=1e-6))
    if not deterministic:
        warnings.append("two eval-mode forwards on the same batch differ (dropout left on, "
                        "random patch order, ...); explanations and attention maps will be "
                        "unstable")
    return errors, warnings, deterministic


def _shapes(batch: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k}: {list(v.shape)} {str(v.dtype).removeprefix('torch.')}"
                     for k, v in batch.items())


# -- loading by id (API process and Dask workers) -------------------------------------------


class _LRU:
    """A small thread-safe LRU keyed by content hash."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return value


_MODELS = _LRU(maxsize=8)
_DATASETS = _LRU(maxsize=8)
_MODEL_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def model_lock(row: ModelRecord) -> threading.Lock:
    """One lock per stored model: estimators register hooks on the shared cached module, so
    two requests must not run on the same model at once."""
    with _LOCKS_GUARD:
        return _MODEL_LOCKS.setdefault(row.sha256 + _config_key(row), threading.Lock())


def _config_key(row: ModelRecord) -> str:
    return json.dumps({"a": row.architecture, "p": row.params, "s": row.spec}, sort_keys=True)


def model_fingerprint(row: ModelRecord) -> str:
    """What a model's results depend on: its weights' hash *and* its format, architecture,
    params and spec (two rows may share weights under different configs or specs), and the
    version of any external weights it loads from an installed package (a frozen pretrained
    text encoder): upgrading that package must not serve results of the old one."""
    key = f"{row.sha256}|{row.format}|{_config_key(row)}"
    external = _external_sources(row)
    if external:
        key += "|" + ",".join(external)
    return hashlib.sha256(key.encode()).hexdigest()


def _external_sources(row: ModelRecord) -> list[str]:
    if row.format != "safetensors" or not row.architecture:
        return []
    try:
        return external_sources(row.architecture, row.params or {})
    except BackboneUnavailable as exc:   # the model cannot run here either; say so in the key
        return [f"unavailable: {exc}"]


def sandbox_available() -> bool:
    return importlib.util.find_spec("backend.services.sandbox") is not None


@functools.cache
def _sandbox_pool(settings_json: str) -> Any:
    from backend.services.sandbox import SandboxPool

    return SandboxPool(Settings.model_validate_json(settings_json))


def model_from_row(settings: Settings, row: ModelRecord, sandbox: Any = None) -> Any:
    """The runnable model of a row: an in-process ``MultimodalModel`` for safetensors, a
    ``SandboxedModel`` (warm host process) for ``.pt2``, from ``sandbox`` (the API's
    ``app.state.sandbox``) or else one pool per process (Dask workers). Raises
    ``NotAvailable`` for .pt2 when the sandbox is not part of this build."""
    path = Storage(settings.data_dir).path(row.sha256)
    if row.format == "pt2":
        if sandbox is None and not sandbox_available():
            raise NotAvailable(".pt2 programs run only in the sandbox host, which is not "
                               "available in this build; upload .safetensors + config to "
                               "explain this model")
        pool = sandbox if sandbox is not None else _sandbox_pool(settings.model_dump_json())
        return pool.get(path, ModelSpec.model_validate(row.spec))
    config = {"architecture": row.architecture, "params": row.params, "spec": row.spec}
    return _MODELS.get_or_make((row.sha256, _config_key(row)),
                               lambda: build_safetensors_model(config, path))


def load_model(settings: Settings, session: Session, model_id: int, sandbox: Any = None
               ) -> Any:
    """Model ``model_id`` ready to run (no permission check: callers have done it):
    ``MultimodalModel`` or, for ``.pt2``, ``SandboxedModel`` (``sandbox``: a
    ``SandboxPool`` to use; default one per process). Raises ``LookupError`` when it does
    not exist."""
    row = session.get(ModelRecord, model_id)
    if row is None:
        raise LookupError(f"model {model_id} not found")
    return model_from_row(settings, row, sandbox)


def dataset_from_row(settings: Settings, row: DatasetRecord) -> MultimodalDataset:
    path = Storage(settings.data_dir).path(row.tensors_sha256)
    return _DATASETS.get_or_make(row.tensors_sha256, lambda: read_normalised(path))


def load_dataset(settings: Settings, session: Session, dataset_id: int) -> MultimodalDataset:
    """Dataset ``dataset_id`` as a ``MultimodalDataset`` (no permission check).
    Raises ``LookupError`` when it does not exist."""
    row = session.get(DatasetRecord, dataset_id)
    if row is None:
        raise LookupError(f"dataset {dataset_id} not found")
    return dataset_from_row(settings, row)


def read_normalised(path: Path) -> MultimodalDataset:
    """Read the normalised dataset file written at upload (safetensors only)."""
    with safetensors.safe_open(str(path), framework="pt") as st:
        meta = st.metadata() or {}
        tensors = {k: st.get_tensor(k) for k in st.keys()}  # noqa: SIM118
    inputs = {k.removeprefix("input."): v for k, v in tensors.items() if k.startswith("input.")}
    ids = json.loads(meta["ids"]) if "ids" in meta else None
    return MultimodalDataset(inputs, tensors["labels"], ids)


def check_compatible(spec: ModelSpec, dataset: MultimodalDataset) -> None:
    """422 unless the dataset has every modality the model needs, with matching shapes."""
    problems = []
    for m in spec.modalities:
        if m.name not in dataset.inputs:
            problems.append(f"missing modality {m.name!r}")
            continue
        x = dataset.inputs[m.name]
        got = list(x.shape[1:])
        if len(got) != len(m.shape) or any(w is not None and w != g
                                           for w, g in zip(m.shape, got, strict=False)):
            problems.append(f"{m.name}: model expects {list(m.shape)}, dataset has {got}")
        elif m.is_token and x.is_floating_point():
            problems.append(f"{m.name}: model expects token ids, dataset has floats")
        elif not m.is_token and not x.is_floating_point():
            problems.append(f"{m.name}: model expects floats, dataset has integers")
    if problems:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "this dataset does not fit the model: " + "; ".join(problems))


def model_inputs(spec: ModelSpec, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dataset's tensors cast to the spec's dtypes, only the model's modalities."""
    return {m.name: batch[m.name].to(m.torch_dtype) for m in spec.modalities}


# -- registering validated uploads (routes and demo registration share this path) -----------


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def _commit_with_blobs(session: Session, storage: Storage, files: list[tuple[Path, str]],
                       row: Any) -> Any:
    """Move files into storage, add the row and commit; if anything fails, blobs this call
    created are removed again, so a failed upload leaves neither files nor rows."""
    created: list[str] = []
    try:
        for path, sha in files:
            if storage.put(path, sha):
                created.append(sha)
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        for sha in created:
            if not blob_in_use(session, sha):
                storage.remove(sha)
        raise
    return row


def parse_model_config(text: str) -> dict[str, Any]:
    """The ``.json`` beside a ``.safetensors``: ``{"architecture", "params", "spec"}``."""
    from estimators.zoo import registry

    try:
        config = json.loads(text)
    except ValueError as exc:
        raise _unprocessable(f"config is not valid JSON: {exc}") from exc
    try:
        architecture, params, spec = registry.read_config(config)
    except KeyError as exc:
        raise _unprocessable(str(exc.args[0]) if exc.args else str(exc)) from exc
    except ValueError as exc:
        raise _unprocessable(str(exc)) from exc
    if architecture not in registry.available():
        raise _unprocessable(f"unknown architecture {architecture!r}; known architectures: "
                             f"{registry.available()}")
    return {"architecture": architecture, "params": params,
            "spec": spec.model_dump(mode="json")}


def parse_spec(text: str) -> ModelSpec:
    try:
        return ModelSpec.model_validate_json(text)
    except ValueError as exc:
        raise _unprocessable(f"spec is not a valid ModelSpec JSON: {exc}") from exc


def register_safetensors_model(settings: Settings, session: Session, *, project_id: int,
                               name: str, weights: Path, weights_sha256: str,
                               config: dict[str, Any], description: str = "",
                               accuracy: float | None = None) -> ModelRecord:
    """Validate weights + config (build, strict load, dry-run forward) and register them.
    ``weights`` is a scratch file: it is moved into storage only when everything passed."""
    try:
        model = build_safetensors_model(config, weights)
    except KeyError as exc:
        raise _unprocessable(str(exc.args[0]) if exc.args else str(exc)) from exc
    except ValueError as exc:
        raise _unprocessable(str(exc)) from exc
    errors, _warnings, _ = dry_run(model)
    if errors:
        raise _unprocessable("the model does not run on inputs of its spec: "
                             + "; ".join(errors))
    row = ModelRecord(project_id=project_id, name=name, format="safetensors",
                      architecture=config["architecture"], params=config["params"],
                      spec=config["spec"], sha256=weights_sha256,
                      size_bytes=weights.stat().st_size, accuracy=accuracy,
                      smooth=is_smooth(model.module), description=description)
    return _commit_with_blobs(session, Storage(settings.data_dir),
                              [(weights, weights_sha256)], row)


def register_program(settings: Settings, session: Session, *, project_id: int, name: str,
                     program: Path, program_sha256: str, spec: ModelSpec,
                     description: str = "") -> ModelRecord:
    """Store a ``.pt2`` program as it is. It is never opened here (loading runs pickle):
    the sandbox host loads and checks it on first use."""
    row = ModelRecord(project_id=project_id, name=name, format="pt2", architecture=None,
                      params={}, spec=spec.model_dump(mode="json"), sha256=program_sha256,
                      size_bytes=program.stat().st_size, smooth=None,
                      description=description)
    return _commit_with_blobs(session, Storage(settings.data_dir),
                              [(program, program_sha256)], row)


def register_dataset(settings: Settings, session: Session, *, project_id: int, name: str,
                     archive: Path, archive_sha256: str, scratch: Path,
                     description: str = "") -> DatasetRecord:
    """Validate a dataset zip, write its normalised tensors, and register both."""
    mb = 1 << 20
    parsed = read_dataset_zip(archive, scratch, max_unzipped_bytes=settings.max_unzipped_mb * mb)
    normalised = scratch / "normalised.safetensors"
    save_normalised(parsed, normalised)
    tensors_sha = file_sha256(normalised)
    counts: dict[str, int] = {}
    for label, count in zip(*torch.unique(parsed.labels, return_counts=True), strict=True):
        key = parsed.classes[int(label)] if parsed.classes else str(int(label))
        counts[key] = int(count)
    row = DatasetRecord(
        project_id=project_id, name=name or parsed.name, n=int(parsed.labels.shape[0]),
        modalities={k: {"shape": list(v.shape[1:]),
                        "dtype": str(v.dtype).removeprefix("torch.")}
                    for k, v in parsed.inputs.items()},
        label_counts=counts,
        meta={"kinds": parsed.kinds, "classes": parsed.classes},
        sha256=archive_sha256, tensors_sha256=tensors_sha,
        size_bytes=archive.stat().st_size, description=description or parsed.description)
    return _commit_with_blobs(session, Storage(settings.data_dir),
                              [(archive, archive_sha256), (normalised, tensors_sha)], row)
