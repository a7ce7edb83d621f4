"""Instance explanations for the API: prediction, attributions, cross-modal interactions,
attention and modality what-ifs of one dataset row, reduced to compact JSON for drawing.

Every result is cached by content hash: the stored model file and its config, the dataset's
normalised tensors, the row index and the request parameters (``storage.cache_key``), so a
second look at the same instance is a file read. Models are built once per process and kept
in an LRU (``catalog``); a per-model lock serialises requests on one model because the
estimators hook into its modules.

Reductions for drawing: an image ``[C, H, W]`` becomes one ``[H][W]`` map (signed sum over
channels for attributions, channel mean for inputs); a token modality ``[T, D]`` one value
per token (sum over the embedding dimension); a time series stays ``[C][L]``; a table
``[F]``. Interactions are summed over elements (image patches, tokens, time windows,
features; ``estimators.attribution.element_layout``).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable
from typing import Any

import torch
from fastapi import HTTPException, status
from sqlalchemy.orm import Session
from torch import Tensor

from backend.core.config import Settings
from backend.db import DatasetRecord, ModelRecord, User
from backend.schemas import (
    AttentionRequest,
    AttributionRequest,
    ExplainRequest,
    InstancePage,
    InstanceRow,
    InstanceView,
    InteractionRequest,
    ModalityView,
    WhatIfRequest,
)
from backend.services import catalog
from backend.services.storage import Storage, cache_key
from estimators.data import MultimodalDataset
from estimators.model import ModalitySpec, ModelSpec, MultimodalModel

# Bump when an estimator or a reduction changes, so cached explanations are recomputed.
CACHE_VERSION = 2
MAX_IMAGE_SIDE = 128
MAX_SERIES_LENGTH = 2048
DIGITS = 6


def not_available(what: str) -> HTTPException:
    return HTTPException(status.HTTP_501_NOT_IMPLEMENTED, f"{what} not available yet")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- reductions for drawing -----------------------------------------------------------------


def _round(x: Tensor) -> list[Any]:
    """Nested lists of floats rounded to a few significant digits (compact JSON)."""
    values = x.detach().to(torch.float64)
    scale = values.abs().max().item() if values.numel() else 0.0
    if scale > 0 and math.isfinite(scale):
        digits = max(DIGITS - math.floor(math.log10(scale)) - 1, 0)
        values = torch.round(values, decimals=min(digits, 12))
    return values.tolist()


def _shrink_image(x: Tensor) -> Tensor:
    """``[..., H, W]`` average-pooled so neither side exceeds ``MAX_IMAGE_SIDE``."""
    h, w = x.shape[-2:]
    if max(h, w) <= MAX_IMAGE_SIDE:
        return x
    f = math.ceil(max(h, w) / MAX_IMAGE_SIDE)
    lead = x.shape[:-2]
    pooled = torch.nn.functional.avg_pool2d(x.reshape(-1, 1, h, w).float(), f, ceil_mode=True)
    return pooled.reshape(*lead, *pooled.shape[-2:])


def _shrink_series(x: Tensor) -> Tensor:
    """``[..., L]`` average-pooled to at most ``MAX_SERIES_LENGTH`` steps."""
    length = x.shape[-1]
    if length <= MAX_SERIES_LENGTH:
        return x
    f = math.ceil(length / MAX_SERIES_LENGTH)
    lead = x.shape[:-1]
    pooled = torch.nn.functional.avg_pool1d(x.reshape(-1, 1, length).float(), f,
                                            ceil_mode=True)
    return pooled.reshape(*lead, pooled.shape[-1])


def _as_image(x: Tensor) -> Tensor:
    """An image row as ``[C, H, W]`` (a bare ``[H, W]`` gets one channel)."""
    return x.unsqueeze(0) if x.ndim == 2 else x.reshape(-1, *x.shape[-2:])


def reduce_attribution(kind: str, is_token: bool, a: Tensor) -> list[Any]:
    """One instance's feature-space attribution → the drawable map described above."""
    if is_token:
        return _round(a.reshape(a.shape[0], -1).sum(-1))
    if kind == "image":
        return _round(_shrink_image(_as_image(a).sum(0)))
    if kind in ("timeseries", "audio"):
        return _round(_shrink_series(a if a.ndim >= 2 else a.unsqueeze(0)))
    return _round(a.reshape(-1))


def _token_strings(spec: ModalitySpec | None, ids: list[int]) -> list[str]:
    vocab = spec.vocab if spec is not None else None
    return [vocab[i] if vocab and 0 <= i < len(vocab) else str(i) for i in ids]


def _token_ids(spec: ModalitySpec | None, x: Tensor) -> list[int]:
    ids = [int(i) for i in x.reshape(-1).tolist()]
    pad = spec.pad_id if spec is not None else None
    return ids if pad is None else [i for i in ids if i != pad]


def modality_view(name: str, kind: str, x: Tensor, spec: ModalitySpec | None) -> ModalityView:
    """One modality of one instance, ready to draw (see ``schemas.ModalityView``)."""
    display = spec.display if spec is not None else {}
    shape = list(x.shape)
    if kind == "text" or not x.is_floating_point():
        ids = _token_ids(spec, x)
        return ModalityView(kind=kind, shape=shape, values=ids, ids=ids,
                            tokens=_token_strings(spec, ids))
    if kind == "image":
        img = _as_image(x.float())
        mean, std = display.get("mean"), display.get("std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) in (1, img.shape[0]):
            m = torch.tensor(mean, dtype=img.dtype).reshape(-1, 1, 1)
            s = torch.tensor(std, dtype=img.dtype).reshape(-1, 1, 1)
            img = img * s + m
        img = _shrink_image(img)
        return ModalityView(kind=kind, shape=shape, values=_round(img.mean(0)),
                            channels=_round(img))
    if kind in ("timeseries", "audio"):
        series = x.float() if x.ndim >= 2 else x.float().unsqueeze(0)
        return ModalityView(kind=kind, shape=shape, values=_round(_shrink_series(series)),
                            sample_rate_hz=display.get("sample_rate_hz"),
                            unit=display.get("unit"))
    flat = x.float().reshape(-1)
    names = display.get("feature_names") or [f"x{i}" for i in range(flat.numel())]
    return ModalityView(kind=kind, shape=shape, values=_round(flat), feature_names=names,
                        units=display.get("units"))


def _kind(drow: DatasetRecord, spec: ModelSpec | None, name: str) -> tuple[str, ModalitySpec |
                                                                                None]:
    if spec is not None and name in spec.names:
        m = spec.modality(name)
        return m.kind, m
    return (drow.meta or {}).get("kinds", {}).get(name, "tabular"), None


def _label_name(drow: DatasetRecord, spec: ModelSpec | None, label: int) -> str | None:
    classes = (drow.meta or {}).get("classes") or (spec.classes if spec else None)
    return classes[label] if classes and 0 <= label < len(classes) else None


def _row_id(dataset: MultimodalDataset, index: int) -> str:
    return dataset.ids[index] if dataset.ids is not None else str(index)


def _check_index(drow: DatasetRecord, index: int) -> None:
    if not 0 <= index < drow.n:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"instance {index} not found; dataset {drow.id} has rows "
                            f"0..{drow.n - 1}")


# -- running estimators in process or in the .pt2 sandbox -----------------------------------


def run_estimator(model: Any, name: str, **kwargs: Any) -> Any:
    """Call the estimator ``name`` (dotted path) on ``model``: directly for an in-process
    ``MultimodalModel``, through the sandbox host (same function, run there) for ``.pt2``.
    Dataclass results come back from the host as dicts; ``field`` reads either."""
    if isinstance(model, MultimodalModel):
        module_name, _, function = name.rpartition(".")
        return getattr(importlib.import_module(module_name), function)(model, **kwargs)
    return model.estimator(name, **kwargs)


def field(result: Any, name: str) -> Any:
    return result[name] if isinstance(result, dict) else getattr(result, name)


def feature_means_of(model: Any, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Dataset mean of each modality in feature space (the ``mean`` baseline)."""
    if isinstance(model, MultimodalModel):
        from estimators.attribution import feature_means

        return feature_means(model, inputs)
    return {k: v.mean(0) for k, v in model.embed(inputs).items()}


def _sandbox_errors() -> tuple[type[Exception], ...]:
    if not catalog.sandbox_available():
        return ()
    from backend.services.sandbox import SandboxError

    return (SandboxError,)


def _http_from_sandbox(exc: Exception) -> HTTPException:
    """A sandbox failure as a client-facing error: the user's request or program → 422,
    the host timing out or dying → 503 (try again), never a 500."""
    kind = getattr(exc, "kind", "")
    code = (status.HTTP_422_UNPROCESSABLE_CONTENT if kind in ("input", "load", "model")
            else status.HTTP_503_SERVICE_UNAVAILABLE)
    return HTTPException(code, f"the .pt2 model's sandbox reported: {exc}")


# -- the service ----------------------------------------------------------------------------


class Explainer:
    """Synchronous explanations for one API process (settings injected, state in storage)."""

    def __init__(self, settings: Settings, sandbox: Any = None) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self.storage = Storage(settings.data_dir)

    # lookups -----------------------------------------------------------------------------

    def model(self, row: ModelRecord) -> Any:
        """The runnable model; a missing or failing sandbox becomes a clear 4xx/5xx."""
        try:
            return catalog.model_from_row(self.settings, row, self.sandbox)
        except catalog.NotAvailable as exc:
            raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, str(exc)) from exc
        except _sandbox_errors() as exc:
            raise _http_from_sandbox(exc) from exc

    def _cached(self, op: str, mrow: ModelRecord, drow: DatasetRecord,
                params: dict[str, Any], compute: Callable[[Any], dict[str, Any]]
                ) -> dict[str, Any]:
        """The cached result for (model content, dataset content, op, params), or compute
        it with the loaded model under that model's lock and cache it."""
        key = cache_key({
            "v": CACHE_VERSION, "op": op, "dataset": drow.tensors_sha256, "params": params,
            "model": catalog.model_fingerprint(mrow)})
        hit = self.storage.read_json("explain", key)
        if hit is not None:
            return hit
        model = self.model(mrow)
        with catalog.model_lock(mrow):
            try:
                value = compute(model)
            except _sandbox_errors() as exc:
                raise _http_from_sandbox(exc) from exc
        self.storage.write_json("explain", key, value)
        return value

    def _rows(self, session: Session, user: User, req: ExplainRequest
              ) -> tuple[ModelRecord, DatasetRecord, ModelSpec]:
        mrow = catalog.model_row(session, user, req.model_id)
        drow = catalog.dataset_row(session, user, req.dataset_id)
        _check_index(drow, req.index)
        spec = ModelSpec.model_validate(mrow.spec)
        if req.target is not None and req.target >= spec.n_classes:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"target {req.target} is not a class index; the model has "
                                f"{spec.n_classes} classes {spec.classes}")
        return mrow, drow, spec

    def _instance(self, model: Any, drow: DatasetRecord, index: int
                  ) -> tuple[dict[str, Tensor], MultimodalDataset]:
        dataset = catalog.dataset_from_row(self.settings, drow)
        catalog.check_compatible(model.spec, dataset)
        return catalog.model_inputs(model.spec, dataset.instance(index)), dataset

    # instances ---------------------------------------------------------------------------

    def instance_page(self, session: Session, user: User, dataset_id: int, *, offset: int,
                      limit: int, label: int | None, model_id: int | None) -> InstancePage:
        drow = catalog.dataset_row(session, user, dataset_id)
        dataset = catalog.dataset_from_row(self.settings, drow)
        rows = torch.arange(len(dataset))
        if label is not None:
            rows = rows[dataset.labels == label]
        page = rows[offset:offset + limit]
        items = [InstanceRow(index=int(i), id=_row_id(dataset, int(i)),
                             label=int(dataset.labels[i])) for i in page]
        if model_id is not None and len(page):
            mrow = catalog.model_row(session, user, model_id)

            def compute(model: Any) -> dict[str, Any]:
                catalog.check_compatible(model.spec, dataset)
                batch = catalog.model_inputs(model.spec, dataset.subset(page).inputs)
                with torch.no_grad():
                    probs = torch.softmax(model(batch).float(), -1)
                conf, pred = probs.max(-1)
                return {"predicted": pred.tolist(), "confidence": _round(conf)}

            preds = self._cached("predictions", mrow, drow, {"rows": page.tolist()}, compute)
            for item, p, c in zip(items, preds["predicted"], preds["confidence"], strict=True):
                item.predicted, item.confidence, item.correct = p, c, p == item.label
        return InstancePage(total=int(rows.numel()), items=items)

    def instance_view(self, session: Session, user: User, dataset_id: int, index: int,
                      model_id: int | None) -> InstanceView:
        drow = catalog.dataset_row(session, user, dataset_id)
        _check_index(drow, index)
        spec = None
        if model_id is not None:
            spec = ModelSpec.model_validate(catalog.model_row(session, user, model_id).spec)
        dataset = catalog.dataset_from_row(self.settings, drow)
        label = int(dataset.labels[index])
        views = {}
        for name, x in dataset.inputs.items():
            kind, mspec = _kind(drow, spec, name)
            views[name] = modality_view(name, kind, x[index], mspec)
        return InstanceView(index=index, id=_row_id(dataset, index), label=label,
                            label_name=_label_name(drow, spec, label), modalities=views)

    # explanations ------------------------------------------------------------------------

    def predict(self, session: Session, user: User, req: ExplainRequest) -> dict[str, Any]:
        mrow, drow, _ = self._rows(session, user, req)

        def compute(model: Any) -> dict[str, Any]:
            inputs, dataset = self._instance(model, drow, req.index)
            with torch.no_grad():
                logits = model(inputs)[0].float()
            probs = torch.softmax(logits, -1)
            return {"classes": list(model.spec.classes), "probs": _round(probs),
                    "predicted": int(probs.argmax()), "label": int(dataset.labels[req.index]),
                    "logits": _round(logits)}

        return self._cached("predict", mrow, drow, _params(req), compute)

    def attributions(self, session: Session, user: User, req: AttributionRequest
                     ) -> dict[str, Any]:
        if not _has("estimators.attribution"):
            raise not_available("attributions (estimators.attribution)")
        mrow, drow, _ = self._rows(session, user, req)

        def compute(model: Any) -> dict[str, Any]:
            inputs, dataset = self._instance(model, drow, req.index)
            target = _resolve_target(model, inputs, req.target)
            means = None
            if req.baseline == "mean":
                sample = dataset.subset(torch.arange(min(len(dataset), 256)))
                means = feature_means_of(model, catalog.model_inputs(model.spec,
                                                                     sample.inputs))
            try:
                result = run_estimator(model, "estimators.attribution.attribute",
                                       inputs=inputs, target=target, method=req.method,
                                       baselines=req.baseline, means=means,
                                       output=req.output)
            except ValueError as exc:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
            attributions = field(result, "attributions")
            modalities = {}
            for m in model.spec.modalities:
                a = attributions[m.name][0]
                modalities[m.name] = {
                    "kind": m.kind, "values": reduce_attribution(m.kind, m.is_token, a),
                    "total": float(a.sum()), "abs_total": float(a.abs().sum())}
            delta = field(result, "delta")
            return {"method": req.method, "target": target,
                    "delta": None if delta is None else float(delta.reshape(-1)[0]),
                    "modalities": modalities}

        return self._cached("attributions", mrow, drow, _params(req), compute)

    def interactions(self, session: Session, user: User, req: InteractionRequest
                     ) -> dict[str, Any]:
        mrow, drow, spec = self._rows(session, user, req)
        for name in (req.a, req.b):
            if name not in spec.names:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                    f"modality {name!r} is not one of the model's {spec.names}")
        if req.a == req.b:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                "a and b must be two different modalities")
        if not _has("estimators.interactions"):
            raise not_available("cross-modal interactions (estimators.interactions)")

        def compute(model: Any) -> dict[str, Any]:
            inputs, _ = self._instance(model, drow, req.index)
            target = _resolve_target(model, inputs, req.target)
            return interaction_map(model, inputs, req.a, req.b, target=target,
                                   output=req.output, top_k=req.top_k, weight=req.weight)

        return self._cached("interactions", mrow, drow, _params(req), compute)

    def attention(self, session: Session, user: User, req: AttentionRequest
                  ) -> dict[str, Any]:
        if not _has("estimators.attention"):
            raise not_available("attention maps (estimators.attention)")
        mrow, drow, _ = self._rows(session, user, req)

        def compute(model: Any) -> dict[str, Any]:
            inputs, _ = self._instance(model, drow, req.index)
            return attention_view(model, inputs, layer=req.layer, head=req.head,
                                  query=req.query)

        return self._cached("attention", mrow, drow, _params(req), compute)

    def whatif(self, session: Session, user: User, req: WhatIfRequest) -> dict[str, Any]:
        mrow, drow, spec = self._rows(session, user, req)
        unknown = sorted(set(req.drop) - set(spec.names))
        if unknown:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"cannot drop {unknown}: the model's modalities are "
                                f"{spec.names}")
        if not _has("estimators.ablation"):
            raise not_available("modality what-if (estimators.ablation)")

        def compute(model: Any) -> dict[str, Any]:
            inputs, dataset = self._instance(model, drow, req.index)
            means = None
            if req.replace == "mean":
                sample = dataset.subset(torch.arange(min(len(dataset), 256)))
                means = feature_means_of(model, catalog.model_inputs(model.spec,
                                                                     sample.inputs))
            with torch.no_grad():
                before = torch.softmax(model(inputs)[0].float(), -1)
            after = run_estimator(model, "estimators.ablation.ablate", inputs=inputs,
                                  drop=sorted(set(req.drop)), replace=req.replace,
                                  means=means, output="softmax")[0].float()
            return {"classes": list(model.spec.classes), "before": _round(before),
                    "after": _round(after), "predicted_before": int(before.argmax()),
                    "predicted_after": int(after.argmax())}

        return self._cached("whatif", mrow, drow, _params(req), compute)


def _params(req: ExplainRequest) -> dict[str, Any]:
    return req.model_dump(mode="json", exclude={"model_id", "dataset_id"})


def _resolve_target(model: Any, inputs: dict[str, Tensor], target: int | None) -> int:
    """``target=None`` means the predicted class."""
    if target is not None:
        return target
    with torch.no_grad():
        return int(model(inputs)[0].argmax())


# -- estimator results → JSON ---------------------------------------------------------------


def element_labels(spec: ModalitySpec, layout: Any, inputs: dict[str, Tensor]) -> list[str]:
    """Human labels for the elements of one modality (patches, tokens, windows, features);
    ``layout`` is an ``ElementLayout`` or its dict form (from the sandbox)."""
    grid = [int(g) for g in field(layout, "grid")]
    size = int(field(layout, "size"))
    feature_shape = [int(d) for d in field(layout, "feature_shape")]
    if spec.is_token:
        ids = [int(i) for i in inputs[spec.name][0].tolist()]
        return [f"{k}:{s}" for k, s in enumerate(_token_strings(spec, ids))]
    if spec.kind == "image":
        rows, cols = grid
        return [f"patch r{r} c{c}" for r in range(rows) for c in range(cols)]
    if spec.kind in ("timeseries", "audio"):
        length = feature_shape[-1]
        bounds = [(k * size, min((k + 1) * size, length)) for k in range(grid[0])]
        rate = spec.display.get("sample_rate_hz")
        if isinstance(rate, int | float) and rate > 0:  # clinicians read seconds, not samples
            return [f"{lo / rate:.2f}–{hi / rate:.2f} s" for lo, hi in bounds]
        return [f"t{lo}–{hi - 1}" for lo, hi in bounds]
    n = math.prod(grid)
    names = spec.display.get("feature_names")
    return list(names) if isinstance(names, list) and len(names) == n else [
        f"x{k}" for k in range(n)]


def interaction_map(model: Any, inputs: dict[str, Tensor], a: str, b: str, *, target: int,
                    output: str, top_k: int, weight: str) -> dict[str, Any]:
    """Element×element cross-modal interactions of one instance
    (``estimators.interactions.interaction_heatmap``: ``M[p, q] = Σ_{i∈p, j∈q} w_i
    ∂²f/∂x_{a,i}∂x_{b,j} w_j``), with the strongest pairs."""
    from estimators.interactions import top_pairs

    result = run_estimator(model, "estimators.interactions.interaction_heatmap",
                           inputs=inputs, a=a, b=b, target=target, output=output,
                           weight=weight)
    matrix = field(result, "matrix")[0].float()
    spec_a, spec_b = model.spec.modality(a), model.spec.modality(b)
    a_labels = element_labels(spec_a, field(result, "layout_a"), inputs)
    b_labels = element_labels(spec_b, field(result, "layout_b"), inputs)
    all_zero = bool(matrix.abs().max() < 1e-10) if matrix.numel() else True
    notes = []
    if not all_zero:   # padding the model ignores (masked, pooled out) is not drawn
        keep_a = _not_silent_padding(spec_a, inputs, matrix)
        keep_b = _not_silent_padding(spec_b, inputs, matrix.T)
        dropped = int((~keep_a).sum() + (~keep_b).sum())
        if dropped:
            matrix = matrix[keep_a][:, keep_b]
            a_labels = [lab for lab, k in zip(a_labels, keep_a.tolist(), strict=True) if k]
            b_labels = [lab for lab, k in zip(b_labels, keep_b.tolist(), strict=True) if k]
            notes.append(f"{dropped} padding token(s) with no interaction are not shown")
    pairs = [{"i": i, "j": j, "value": v, "a_label": a_labels[i], "b_label": b_labels[j]}
             for i, j, v in top_pairs(matrix, top_k)]
    if all_zero:
        notes.append("every cross-modal second derivative is zero here: the model is additive "
                     f"in {a} and {b}, or piecewise linear (ReLU, max-pool); for ReLU models "
                     "try output='log_softmax'")
    note = "; ".join(notes) or None
    return {"a": a, "b": b, "target": target, "weight": weight, "a_labels": a_labels,
            "b_labels": b_labels, "matrix": _round(matrix), "top_pairs": pairs,
            "all_zero": all_zero, "note": note}


def _not_silent_padding(spec: ModalitySpec, inputs: dict[str, Tensor], rows: Tensor
                        ) -> Tensor:
    """``[rows]`` bool: False for [PAD] tokens whose interaction row is exactly zero (the
    model masks or pools padding out), True for everything else. Element ``k`` of a token
    modality is token ``k``; padding a model does use keeps its row."""
    keep = torch.ones(rows.shape[0], dtype=torch.bool)
    ids = inputs[spec.name][0].reshape(-1)
    if not spec.is_token or spec.pad_id is None or ids.numel() != rows.shape[0]:
        return keep
    silent = rows.abs().amax(dim=1).cpu() <= 1e-12 * float(rows.abs().max())
    return keep & ~((ids.cpu() == spec.pad_id) & silent)


def attention_view(model: Any, inputs: dict[str, Tensor], *, layer: int | None,
                   head: int | None, query: int | None) -> dict[str, Any]:
    """Captured attention of one instance as the contract's JSON
    (``estimators.attention.attention_response``)."""
    from estimators.attention import attention_response, padding_positions

    attentions = run_estimator(model, "estimators.attention.capture_attention", inputs=inputs)
    token_specs = [m for m in model.spec.modalities if m.is_token]
    tokens = {m.name: _token_strings(m, [int(i) for i in inputs[m.name][0].tolist()])
              for m in token_specs}
    try:
        hide = None
        if attentions and model.spec.token_layout:   # masked-out padding is not drawn
            hide = padding_positions(model.spec.token_layout, attentions[-1].shape[-1],
                                     {m.name: inputs[m.name][0] for m in token_specs},
                                     {m.name: m.pad_id for m in token_specs},
                                     attentions=list(attentions))
        return attention_response(list(attentions), model.spec.token_layout, layer=layer,
                                  head=head, query=query, tokens=tokens, hide=hide)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


# -- warm-up --------------------------------------------------------------------------------


def warm_up() -> None:
    """Run every instance estimator once on a tiny zoo transformer, so the first explanation
    a user asks for does not pay the one-time set-up of Captum and ``torch.func`` (about
    5–10 s on a busy 2-core machine; afterwards demo-model views take well under a second).
    Failures are only logged: warming is an optimisation."""
    import logging

    try:
        from estimators.model import ModalitySpec
        from estimators.zoo import registry
        from estimators.zoo.architectures import modality_params, token_layout

        spec = ModelSpec(modalities=[
            ModalitySpec(name="image", kind="image", shape=(1, 4, 4)),
            ModalitySpec(name="text", kind="text", shape=(3,), dtype="int64",
                         embedding="encoders.text.embed", vocab=["[PAD]", "a", "b"],
                         pad_id=0)], classes=["x", "y"])
        params = {"modalities": modality_params(spec), "n_classes": 2, "dim": 8,
                  "image_patch": 2}
        spec = spec.model_copy(update={"token_layout": token_layout(params)})
        model = MultimodalModel(registry.build("transformer", params), spec)
        inputs = spec.example_inputs(1, seed=0)
        run_estimator(model, "estimators.attribution.attribute", inputs=inputs, target=0,
                      n_steps=4)
        interaction_map(model, inputs, "image", "text", target=0, output="logits", top_k=3,
                        weight="input")
        if _has("estimators.attention"):
            attention_view(model, inputs, layer=None, head=None, query=None)
    except Exception:
        logging.getLogger("crosslens.explain").exception("estimator warm-up failed")
