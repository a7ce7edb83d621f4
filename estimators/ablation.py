"""Modality ablation, exact Shapley values over modalities, robustness curves.

All three replace a modality in feature space (``estimators.model``), so a token modality
is dropped at its embedding output (all-[PAD], all-[MASK] or mean embedding) exactly like a
continuous one.

- ``ablate``: the what-if of one instance: logits with some modalities replaced by their
  baseline or the dataset mean.
- ``modality_shapley``: exact Shapley values (Shapley 1953) of the modalities as players,
  ``φ_m = Σ_{S ⊆ M∖{m}} |S|!(M−|S|−1)!/M! · (v(S ∪ {m}) − v(S))`` with ``v(S)`` the target
  output when only the modalities in S keep their values. All 2^M coalitions are evaluated
  in one batched forward (fine for M ≤ 8); efficiency ``Σ_m φ_m = v(M) − v(∅)`` holds exactly.
- ``robustness_curve``: accuracy as one modality is corrupted more and more: Gaussian noise
  of ``level`` × the modality's standard deviation, or a random fraction ``level`` of its
  elements (pixels, tokens, time steps, features) replaced by the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from estimators.attribution import (
    Baselines,
    Target,
    element_layout,
    feature_baselines,
    feature_means,
)
from estimators.data import MultimodalDataset
from estimators.model import MultimodalModel, Output, apply_output, select_target

Replace = Literal["baseline", "mean"]
MAX_SHAPLEY_MODALITIES = 8
NOISE_LEVELS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)  # × the modality's std
MASK_LEVELS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # fraction of elements


def _references(model: MultimodalModel, inputs: Mapping[str, Tensor],
                features: Mapping[str, Tensor], replace: Replace, baselines: Baselines,
                means: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    if replace == "baseline":
        return feature_baselines(model, inputs, features, baselines, means=means)
    if replace == "mean":
        return feature_baselines(model, inputs, features, "mean", means=means)
    raise ValueError(f"replace must be 'baseline' or 'mean', not {replace!r}")


def _forward(model: MultimodalModel, inputs: Mapping[str, Tensor],
             features: Mapping[str, Tensor], output: Output) -> Tensor:
    raw = {n: inputs[n] if n in model.token_names else features[n] for n in model.spec.names}
    return apply_output(model.forward_embedded(raw, features), output)


@torch.no_grad()
def ablate(model: MultimodalModel, inputs: Mapping[str, Tensor], drop: Sequence[str], *,
           replace: Replace = "baseline", baselines: Baselines = "zeros",
           means: Mapping[str, Tensor] | None = None, output: Output = "logits") -> Tensor:
    """Outputs ``[B, C]`` with the modalities in ``drop`` replaced in feature space by their
    baseline (``baselines``, see ``feature_baselines``) or, with ``replace="mean"``, by the
    dataset mean ``means`` (from ``feature_means``)."""
    unknown = sorted(set(drop) - set(model.spec.names))
    if unknown:
        raise ValueError(f"cannot drop {unknown}: the model's modalities are "
                         f"{model.spec.names}")
    features = model.embed(inputs)
    refs = _references(model, inputs, features, replace, baselines, means)
    mixed = {n: refs[n] if n in drop else features[n] for n in features}
    return _forward(model, inputs, mixed, output)


@dataclass(frozen=True)
class ModalityShapley:
    """``values[:, m]``: Shapley value of modality ``names[m]`` ``[B, M]``;
    ``coalition_values[:, S]``: ``v(S)`` for the coalition with bitmask S (bit m set when
    modality m keeps its value) ``[B, 2^M]``."""

    names: list[str]
    values: Tensor
    coalition_values: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        return {n: self.values[:, m] for m, n in enumerate(self.names)}

    def coalition(self, members: Sequence[str]) -> Tensor:
        """``v(S)`` ``[B]`` for the coalition of the named modalities."""
        mask = sum(1 << self.names.index(n) for n in members)
        return self.coalition_values[:, mask]


def shapley_weights(n_players: int) -> Tensor:
    """``W [2^M, M]`` with ``φ = v @ W`` for coalition values ``v [.., 2^M]``."""
    weights = torch.zeros(2**n_players, n_players, dtype=torch.float64)
    fact = math.factorial
    for mask in range(2**n_players):
        size = bin(mask).count("1")
        for m in range(n_players):
            if mask >> m & 1:  # S ∪ {m} = mask, S = mask without m
                weights[mask, m] += fact(size - 1) * fact(n_players - size) / fact(n_players)
            else:
                weights[mask, m] -= fact(size) * fact(n_players - size - 1) / fact(n_players)
    return weights


@torch.no_grad()
def modality_shapley(model: MultimodalModel, inputs: Mapping[str, Tensor], *, target: Target,
                     output: Output = "logits", replace: Replace = "baseline",
                     baselines: Baselines = "zeros", means: Mapping[str, Tensor] | None = None,
                     batch_size: int = 4096) -> ModalityShapley:
    """Exact Shapley values of the modalities for ``f_target``; absent modalities take their
    reference (as in ``ablate``). ``batch_size``: rows per forward over the ``2^M·B``
    coalition inputs."""
    names = model.spec.names
    n_players = len(names)
    if n_players > MAX_SHAPLEY_MODALITIES:
        raise ValueError(f"exact Shapley values over {n_players} modalities need "
                         f"2^{n_players} forwards per instance; at most "
                         f"{MAX_SHAPLEY_MODALITIES} are supported")
    features = model.embed(inputs)
    refs = _references(model, inputs, features, replace, baselines, means)
    batch = features[names[0]].shape[0]
    masks = torch.arange(2**n_players)
    rows = 2**n_players * batch
    values = []
    for start in range(0, rows, batch_size):
        idx = torch.arange(start, min(start + batch_size, rows))
        coalition, instance = idx.div(batch, rounding_mode="floor"), idx % batch
        mixed = {}
        for m, n in enumerate(names):
            keep = ((masks[coalition] >> m) & 1).bool()
            keep = keep.reshape(-1, *[1] * (features[n].ndim - 1))
            mixed[n] = torch.where(keep, features[n][instance], refs[n][instance])
        ids = {n: inputs[n][instance] for n in model.token_names}
        out = _forward(model, ids, mixed, output)
        tgt = target if isinstance(target, int) or torch.as_tensor(target).ndim == 0 \
            else torch.as_tensor(target)[instance]
        values.append(select_target(out, tgt))
    v = torch.cat(values).reshape(2**n_players, batch).T.double()
    phi = (v @ shapley_weights(n_players)).to(torch.float32)
    return ModalityShapley(list(names), phi, v.to(torch.float32))


# -- robustness ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RobustnessCurves:
    """``accuracy[name]``: ``[L]`` accuracy at each of ``levels`` when only ``name`` is
    corrupted (``kind`` "noise" or "mask"); ``clean``: accuracy without corruption."""

    kind: str
    levels: list[float]
    accuracy: dict[str, Tensor]
    clean: float


def _feature_std(model: MultimodalModel, dataset: MultimodalDataset, batch_size: int,
                 names: Sequence[str]) -> dict[str, float]:
    sums = dict.fromkeys(names, 0.0)
    squares = dict.fromkeys(names, 0.0)
    counts = dict.fromkeys(names, 0)
    for rows, _ in dataset.batches(batch_size):
        feats = model.embed(rows)
        for n in names:
            x = feats[n].double()
            sums[n] += float(x.sum())
            squares[n] += float((x * x).sum())
            counts[n] += x.numel()
    return {n: math.sqrt(max(squares[n] / counts[n] - (sums[n] / counts[n]) ** 2, 0.0))
            for n in names}


@torch.no_grad()
def robustness_curve(model: MultimodalModel, dataset: MultimodalDataset, *,
                     modalities: Sequence[str] | None = None,
                     kind: Literal["noise", "mask"] = "noise",
                     levels: Sequence[float] | None = None,
                     baselines: Baselines = "zeros", means: Mapping[str, Tensor] | None = None,
                     batch_size: int = 256, seed: int = 0) -> RobustnessCurves:
    """Accuracy against corruption of each modality in turn (the others untouched).

    ``kind="noise"``: add ``level · σ_m · ε`` (ε standard normal, σ_m the modality's
    feature standard deviation over ``dataset``); ``kind="mask"``: replace a random
    fraction ``level`` ∈ [0, 1] of the modality's elements (pixels, tokens, time steps,
    tabular features) by the baseline. ``levels`` default to ``NOISE_LEVELS`` or
    ``MASK_LEVELS``. Deterministic for a given ``seed``.
    """
    if levels is None:
        levels = NOISE_LEVELS if kind == "noise" else MASK_LEVELS
    names = list(modalities) if modalities is not None else model.spec.names
    unknown = sorted(set(names) - set(model.spec.names))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; the model has {model.spec.names}")
    if kind == "mask" and any(not 0 <= lv <= 1 for lv in levels):
        raise ValueError("mask levels are fractions of elements in [0, 1]")
    if kind not in ("noise", "mask"):
        raise ValueError(f"kind must be 'noise' or 'mask', not {kind!r}")
    level_t = torch.tensor(list(levels), dtype=torch.float32)
    n_levels = len(level_t)
    std = _feature_std(model, dataset, batch_size, names) if kind == "noise" else {}
    gen = torch.Generator().manual_seed(seed)
    correct = {n: torch.zeros(n_levels) for n in names}
    clean = 0.0
    for rows, labels in dataset.batches(batch_size):
        feats = model.embed(rows)
        batch = labels.shape[0]
        clean += float((_forward(model, rows, feats, "logits").argmax(-1) == labels).sum())
        refs = feature_baselines(model, rows, feats, baselines, means=means)
        rep_rows = {k: v.repeat(n_levels, *[1] * (v.ndim - 1)) for k, v in rows.items()}
        rep_feats = {k: v.repeat(n_levels, *[1] * (v.ndim - 1)) for k, v in feats.items()}
        for n in names:
            x = rep_feats[n]
            lv = level_t.repeat_interleave(batch).reshape(-1, *[1] * (x.ndim - 1))
            if kind == "noise":
                corrupted = x + lv * std[n] * torch.randn(x.shape, generator=gen)
            else:
                layout = element_layout(model.spec.modality(n), x.shape[1:], size=1)
                drop = torch.rand(x.shape[0], layout.n_elements, generator=gen) < lv.reshape(-1, 1)
                drop = drop[:, layout.index].reshape(x.shape)
                ref = refs[n].repeat(n_levels, *[1] * (x.ndim - 1))
                corrupted = torch.where(drop, ref, x)
            out = _forward(model, rep_rows, {**rep_feats, n: corrupted}, "logits")
            hits = (out.argmax(-1) == labels.repeat(n_levels)).reshape(n_levels, batch)
            correct[n] += hits.sum(1).float()
    total = len(dataset)
    return RobustnessCurves(kind, [float(v) for v in levels],
                            {n: c / total for n, c in correct.items()}, clean / total)


@torch.no_grad()
def modality_importance(model: MultimodalModel, dataset: MultimodalDataset, *,
                        output: Output = "softmax", replace: Replace = "baseline",
                        baselines: Baselines = "zeros", batch_size: int = 256
                        ) -> dict[str, dict[str, float]]:
    """Dataset summary of ``modality_shapley`` for each instance's predicted class:
    ``{name: {"mean": mean φ, "mean_abs": mean |φ|}}``. With ``replace="mean"`` the means
    are the dataset's own feature means."""
    means = feature_means(model, dataset.inputs, batch_size=batch_size) \
        if replace == "mean" else None
    names = model.spec.names
    sums = torch.zeros(len(names), dtype=torch.float64)
    abs_sums = torch.zeros(len(names), dtype=torch.float64)
    for rows, _ in dataset.batches(batch_size):
        predicted = model(rows).argmax(-1)
        phi = modality_shapley(model, rows, target=predicted, output=output, replace=replace,
                               baselines=baselines, means=means).values.double()
        sums += phi.sum(0)
        abs_sums += phi.abs().sum(0)
    n = len(dataset)
    return {name: {"mean": float(sums[m] / n), "mean_abs": float(abs_sums[m] / n)}
            for m, name in enumerate(names)}
