"""Per-modality first-order attributions, computed in feature space through Captum.

Every method here explains ``f_target(x)`` for a ``MultimodalModel`` whose inputs are mapped
to *feature space* (``model.embed``): token modalities are attributed at their embedding
output ``[B, T, D]`` (what Captum's ``LayerIntegratedGradients`` does for one layer, here for
any number of modalities at once), every other modality at its raw tensor. The Captum
methods are used as they are; this module adds the multimodal plumbing users struggle with:
tuples of inputs in a fixed modality order, token ids carried as additional forward
arguments (expanded by Captum alongside the interpolation steps), per-modality baselines,
and per-modality totals.

- Integrated Gradients (Sundararajan et al. 2017, "Axiomatic Attribution for Deep
  Networks"): ``IG_i = (x_i − x'_i) ∫₀¹ ∂f(x' + α(x − x'))/∂x_i dα``; completeness
  ``Σ_i IG_i = f(x) − f(x')``, whose numerical error Captum returns as the convergence delta.
- Saliency (Simonyan et al. 2014): ``|∂f/∂x_i|``.
- InputXGradient (Shrikumar et al. 2016): ``x_i ∂f/∂x_i``.

The module also defines *elements*, the units a person looks at (image patches, tokens,
time-series windows, tabular features): ``element_layout`` and ``to_elements`` sum a
feature-space tensor over each element, for the UI, interaction heatmaps and faithfulness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import Tensor

from estimators.model import ModalitySpec, MultimodalModel, Output, apply_output

Method = Literal["integrated_gradients", "saliency", "input_x_gradient"]
BaselineKind = Literal["zeros", "mean", "pad", "mask", "blur"]
Baselines = BaselineKind | Mapping[str, "BaselineKind | Tensor"]
Target = int | Tensor

METHODS: tuple[str, ...] = ("integrated_gradients", "saliency", "input_x_gradient")
BASELINE_KINDS: tuple[str, ...] = ("zeros", "mean", "pad", "mask", "blur")


@dataclass(frozen=True)
class AttributionResult:
    """Attributions of one method for a batch, per modality, in feature space.

    ``attributions[name]``: ``[B, *feature_shape]`` (``[B, T, D]`` for token modalities).
    ``totals[name]``: ``[B]``, the sum over the modality: how much it contributed.
    ``delta``: ``[B]`` completeness error ``Σ attributions − (f(x) − f(x'))`` for Integrated
    Gradients, ``None`` for methods without a completeness property.
    """

    method: str
    attributions: dict[str, Tensor]
    totals: dict[str, Tensor]
    delta: Tensor | None


# -- elements -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ElementLayout:
    """How the entries of one modality's feature tensor group into elements.

    ``index[k]`` is the element of the k-th entry of the flattened feature tensor;
    ``grid`` is the elements' own shape (``(rows, cols)`` of image patches, ``(T,)`` tokens,
    ``(windows,)`` of a time series, the feature shape of tabular data); ``size`` is the
    patch side or window length (1 for tokens and tabular features).
    """

    index: Tensor
    grid: tuple[int, ...]
    size: int
    feature_shape: tuple[int, ...]

    @property
    def n_elements(self) -> int:
        return math.prod(self.grid)


def element_layout(spec: ModalitySpec, feature_shape: Sequence[int], *,
                   size: int | None = None) -> ElementLayout:
    """Elements of a modality: image ``[..., H, W]`` → ``size``×``size`` patches (default so
    the grid is at most 16×16), token ``[T, D]`` → tokens, time series / audio ``[..., L]``
    → windows of ``size`` steps (default at most 64 windows), tabular → features."""
    shape = tuple(int(d) for d in feature_shape)
    n = math.prod(shape)
    flat = torch.arange(n).reshape(shape)
    if spec.kind == "image":
        h, w = shape[-2], shape[-1]
        p = size or max(1, math.ceil(max(h, w) / 16))
        rows, cols = math.ceil(h / p), math.ceil(w / p)
        hh = torch.arange(h).div(p, rounding_mode="floor").reshape(h, 1)
        ww = torch.arange(w).div(p, rounding_mode="floor").reshape(1, w)
        index = (hh * cols + ww).expand_as(flat)
        return ElementLayout(index.reshape(-1).clone(), (rows, cols), p, shape)
    if spec.is_token:
        t = shape[0]
        index = torch.arange(t).reshape(t, *([1] * (len(shape) - 1))).expand_as(flat)
        return ElementLayout(index.reshape(-1).clone(), (t,), 1, shape)
    if spec.kind in ("timeseries", "audio"):
        length = shape[-1]
        win = size or max(1, math.ceil(length / 64))
        index = torch.arange(length).div(win, rounding_mode="floor").expand_as(flat)
        return ElementLayout(index.reshape(-1).clone(), (math.ceil(length / win),), win, shape)
    return ElementLayout(torch.arange(n), shape, 1, shape)


def to_elements(x: Tensor, layout: ElementLayout) -> Tensor:
    """Sum ``x [..., *feature_shape]`` over each element → ``[..., n_elements]``."""
    k = len(layout.feature_shape)
    lead = x.shape[: x.ndim - k]
    flat = x.reshape(*lead, -1)
    out = flat.new_zeros(*lead, layout.n_elements)
    return out.index_add_(-1, layout.index.to(x.device), flat)


def model_element_layout(model: MultimodalModel, features: Mapping[str, Tensor], name: str,
                         *, size: int | None = None) -> ElementLayout:
    """``element_layout`` for modality ``name`` given a batch of features ``[B, ...]``."""
    return element_layout(model.spec.modality(name), features[name].shape[1:], size=size)


# -- baselines ------------------------------------------------------------------------------


def feature_means(model: MultimodalModel, inputs: Mapping[str, Tensor], *,
                  batch_size: int = 256) -> dict[str, Tensor]:
    """Mean of each modality in feature space over the rows of ``inputs`` (for the ``mean``
    baseline and ablation): token modalities average their embedding outputs."""
    n = next(iter(inputs.values())).shape[0]
    sums: dict[str, Tensor] = {}
    for start in range(0, n, batch_size):
        chunk = {k: v[start:start + batch_size] for k, v in inputs.items()}
        for name, feat in model.embed(chunk).items():
            total = feat.double().sum(0)
            sums[name] = sums[name] + total if name in sums else total
    return {name: (s / n).to(torch.float32) for name, s in sums.items()}


def _gaussian_blur(x: Tensor, spatial_dims: int, sigma: float) -> Tensor:
    """Separable Gaussian blur over the last ``spatial_dims`` axes, reflect-padded."""
    radius = max(1, math.ceil(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = x
    for axis in range(x.ndim - spatial_dims, x.ndim):
        moved = out.movedim(axis, -1)
        size = moved.shape[-1]
        pad = min(radius, size - 1)
        k = kernel[radius - pad: radius + pad + 1] if pad < radius else kernel
        k = k / k.sum()
        line = moved.reshape(-1, 1, size)
        if pad > 0:
            line = F.pad(line, (pad, pad), mode="reflect")
        line = F.conv1d(line, k.reshape(1, 1, -1))
        out = line.reshape(moved.shape).movedim(-1, axis)
    return out


def _token_baseline(model: MultimodalModel, inputs: Mapping[str, Tensor], name: str,
                    kind: str) -> Tensor:
    spec = model.spec.modality(name)
    token_id = spec.pad_id if kind == "pad" else spec.mask_id
    if token_id is None:
        raise ValueError(f"baseline {kind!r} for modality {name!r} needs the spec's "
                         f"{kind}_id; set it in the ModelSpec or use baselines='zeros'")
    ids = torch.full_like(inputs[name], token_id)
    return model.embed({**inputs, name: ids})[name]


def feature_baselines(model: MultimodalModel, inputs: Mapping[str, Tensor],
                      features: Mapping[str, Tensor], baselines: Baselines = "zeros", *,
                      means: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Per-modality reference inputs ``x'`` in feature space, shaped like ``features``.

    ``baselines`` is one kind for all modalities or a dict ``name -> kind | Tensor``
    (modalities missing from the dict get ``zeros``). Kinds: ``zeros``; ``mean`` (the
    dataset mean in feature space, from ``means``, see ``feature_means``); ``pad`` / ``mask``
    (token modalities: the embedding of an all-[PAD] / all-[MASK] sequence; others zeros);
    ``blur`` (images and time series Gaussian-blurred with σ = 1/8 of the longest spatial
    side, the rest as ``pad``). A tensor is used as is (with or without the batch axis).
    """
    out: dict[str, Tensor] = {}
    for spec in model.spec.modalities:
        name = spec.name
        feat = features[name]
        choice = baselines if isinstance(baselines, str) else baselines.get(name, "zeros")
        if isinstance(choice, Tensor):
            value = choice.to(feat.dtype)
            if value.shape not in (feat.shape, feat.shape[1:]):
                raise ValueError(f"baseline for {name!r} has shape {list(choice.shape)}; "
                                 f"expected {list(feat.shape[1:])} or {list(feat.shape)}")
            out[name] = value.expand_as(feat).clone()
            continue
        if choice not in BASELINE_KINDS:
            raise ValueError(f"baseline {choice!r} for {name!r} is not one of {BASELINE_KINDS}"
                             " or a tensor")
        if choice == "mean":
            if means is None or name not in means:
                raise ValueError("baseline 'mean' needs means=feature_means(model, "
                                 f"dataset_inputs) with an entry for {name!r}")
            out[name] = means[name].to(feat.dtype).expand_as(feat).clone()
        elif choice in ("pad", "mask", "blur") and spec.is_token:
            out[name] = _token_baseline(model, inputs, name, "pad" if choice == "blur"
                                        else choice)
        elif choice == "blur" and spec.kind in ("image", "timeseries", "audio"):
            spatial = 2 if spec.kind == "image" else 1
            sigma = max(1.0, max(feat.shape[-spatial:]) / 8)
            out[name] = _gaussian_blur(feat, spatial, sigma)
        else:
            out[name] = torch.zeros_like(feat)
    return out


# -- Captum wrapper -------------------------------------------------------------------------


def feature_forward(model: MultimodalModel, output: Output = "logits"
                    ) -> Callable[..., Tensor]:
    """The model as Captum sees it: ``forward(*features, *token_ids) -> [B, C]``.

    Features come in ``model.spec.names`` order, token ids (one per token modality, in
    ``model.token_names`` order) follow as additional forward arguments.
    """
    names, token_names = model.spec.names, model.token_names

    def forward(*args: Tensor) -> Tensor:
        feats = dict(zip(names, args[: len(names)], strict=True))
        ids = dict(zip(token_names, args[len(names):], strict=True))
        raw = {n: ids[n] if n in ids else feats[n] for n in names}
        return apply_output(model.forward_embedded(raw, feats), output)

    return forward


def _captum_target(target: Target) -> int | Tensor:
    if isinstance(target, Tensor):
        return int(target) if target.ndim == 0 else target.long()
    return int(target)


def attribute(model: MultimodalModel, inputs: Mapping[str, Tensor], *, target: Target,
              method: Method = "integrated_gradients", baselines: Baselines = "zeros",
              means: Mapping[str, Tensor] | None = None, output: Output = "logits",
              n_steps: int = 50, internal_batch_size: int | None = None) -> AttributionResult:
    """Attributions of ``f_target`` to every modality at once, in feature space.

    ``inputs``: dict of ``[B, ...]`` tensors keyed by modality. ``target``: int or int
    ``[B]``. ``baselines`` / ``means``: see ``feature_baselines`` (Integrated Gradients
    only). ``n_steps``: Gauss–Legendre nodes of the IG path integral;
    ``internal_batch_size``: rows per forward pass while integrating (memory bound).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    names = model.spec.names
    features = model.embed(inputs)
    feats = tuple(features[n] for n in names)
    token_ids = tuple(inputs[n] for n in model.token_names)
    forward = feature_forward(model, output)
    extra = token_ids or None
    captum_target = _captum_target(target)
    delta: Tensor | None = None
    if method == "integrated_gradients":
        base = feature_baselines(model, inputs, features, baselines, means=means)
        attrs, delta = IntegratedGradients(forward).attribute(
            feats, baselines=tuple(base[n] for n in names), target=captum_target,
            additional_forward_args=extra, n_steps=n_steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True)
    elif method == "saliency":
        feats = tuple(f.clone().requires_grad_() for f in feats)
        attrs = Saliency(forward).attribute(feats, target=captum_target,
                                            additional_forward_args=extra)
    else:
        feats = tuple(f.clone().requires_grad_() for f in feats)
        attrs = InputXGradient(forward).attribute(feats, target=captum_target,
                                                  additional_forward_args=extra)
    per_modality = {n: a.detach() for n, a in zip(names, attrs, strict=True)}
    totals = {n: a.flatten(1).sum(1) for n, a in per_modality.items()}
    return AttributionResult(method, per_modality, totals,
                             None if delta is None else delta.detach())
