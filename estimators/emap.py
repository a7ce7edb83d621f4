"""EMAP: the empirical multimodally-additive projection (Hessel & Lee 2020, "Does my
multimodal model learn cross-modal interactions? It's harder to tell than you might think!").

For two modalities and a sample of N instances, the additive function closest to ``f``
(its projection onto ``g(x₁) + h(x₂)`` under the product of the empirical marginals) is

    EMAP(f)(x₁ᵢ, x₂ᵢ) = mean_j f(x₁ᵢ, x₂ⱼ) + mean_j f(x₁ⱼ, x₂ᵢ) − mean_{j,k} f(x₁ⱼ, x₂ₖ).

If ``f`` is additive, ``EMAP(f) = f`` exactly; if ``f`` scores better than ``EMAP(f)`` the
model uses non-additive (cross-modal) interactions on this data (the *EMAP gap*). With M
modalities the same projection reads

    EMAP(f)(xᵢ) = Σ_m mean_j f(x_m,ᵢ, x_{−m},ⱼ) − (M − 1) μ,

with ``x_{−m},ⱼ`` the other modalities of instance j (kept together) and ``μ`` the mean of
every evaluated pair; it is again exact on additive models and reduces to the formula above
for M = 2, where one pass over the N² pairs gives both means (row and column sums).

The N² (or M·N²) pairs are evaluated ``batch_size`` at a time as rectangular blocks of
the pair grid (so row and column sums are plain reductions) and only the sums are kept, never
all logits. A model made of per-modality encoders and a fusion head can pass
``encoders`` (see ``Encoders``): the encoders then run N times and only the head sees the
pairs, which is far cheaper and gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from estimators.data import MultimodalDataset
from estimators.model import MultimodalModel


@dataclass(frozen=True)
class Encoders:
    """A model split as ``fuse({name: encode[name](x_name)}) == model(inputs)``."""

    encode: Mapping[str, Callable[[Tensor], Tensor]]
    fuse: Callable[[Mapping[str, Tensor]], Tensor]

    @classmethod
    def of(cls, model: MultimodalModel) -> Encoders | None:
        """The split of a module with ``encoders`` (a ``ModuleDict`` keyed by modality) and
        ``fuse(encodings)``, like the zoo's fusion models; ``None`` for any other module."""
        module = model.module
        encoders = getattr(module, "encoders", None)
        fuse = getattr(module, "fuse", None)
        if not isinstance(encoders, nn.ModuleDict) or not callable(fuse):
            return None
        if set(encoders.keys()) != set(model.spec.names):
            return None
        return cls({n: encoders[n] for n in model.spec.names}, fuse)


def _n_rows(inputs: Mapping[str, Tensor]) -> int:
    sizes = {v.shape[0] for v in inputs.values()}
    if len(sizes) != 1:
        raise ValueError(f"every modality needs the same number of rows, got {sorted(sizes)}")
    return sizes.pop()


@torch.no_grad()
def emap_logits(model: MultimodalModel, inputs: Mapping[str, Tensor], *,
                batch_size: int = 4096, encoders: Encoders | None = None) -> Tensor:
    """``EMAP(f)`` logits ``[N, n_classes]`` for the N instances of ``inputs``.

    ``batch_size``: pairs per forward pass (a block of whole rows of the N×N pair grid
    when N ≤ batch_size, else row pieces of ``batch_size`` pairs). ``encoders``: evaluate
    from cached per-modality encodings (``Encoders.of(model)`` finds them for two-stage
    fusion models).
    """
    names = model.spec.names
    if len(names) < 2:
        raise ValueError("EMAP needs at least two modalities; this model has one")
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    model.check_inputs(inputs)
    n = _n_rows(inputs)
    if encoders is None:
        source: Mapping[str, Tensor] = inputs

        def evaluate(rows: Mapping[str, Tensor]) -> Tensor:
            return model(rows, check=False)
    else:
        source = {name: torch.cat([encoders.encode[name](inputs[name][s:s + batch_size])
                                   for s in range(0, n, batch_size)]) for name in names}

        def evaluate(rows: Mapping[str, Tensor]) -> Tensor:
            return encoders.fuse(rows)

    passes = names[:1] if len(names) == 2 else names
    width = min(n, batch_size)  # columns of the N×N pair grid per forward
    height = max(1, batch_size // width)  # rows per forward
    row_sums: list[Tensor] = []
    col_sum = torch.zeros((), dtype=torch.float64)
    for own in passes:
        rows_acc = torch.zeros((), dtype=torch.float64)
        cols_acc = torch.zeros((), dtype=torch.float64)
        for r0 in range(0, n, height):
            k = min(height, n - r0)
            row_part = []
            for c0 in range(0, n, width):
                w = min(width, n - c0)
                i = torch.arange(r0, r0 + k).repeat_interleave(w)
                j = torch.arange(c0, c0 + w).repeat(k)
                out = evaluate({m: source[m][i if m == own else j] for m in names})
                grid = out.reshape(k, w, -1)
                row_part.append(grid.sum(1, dtype=torch.float64))
                col_block = grid.sum(0, dtype=torch.float64)
                cols_acc = cols_acc + torch.nn.functional.pad(
                    col_block, (0, 0, c0, n - c0 - w))
            part = torch.stack(row_part).sum(0)
            rows_acc = part if rows_acc.ndim == 0 else torch.cat([rows_acc, part])
        row_sums.append(rows_acc)
        col_sum = cols_acc
    total = sum(r.sum(0) for r in row_sums)
    mu = total / (len(passes) * n * n)
    if len(names) == 2:
        projected = (row_sums[0] + col_sum) / n - mu
    else:
        projected = sum(row_sums) / n - (len(names) - 1) * mu
    return projected.to(torch.float32)


@dataclass(frozen=True)
class EmapGap:
    """``score`` of f, ``emap_score`` of EMAP(f), ``gap = score − emap_score`` and how often
    the two predict the same class (``agreement``)."""

    metric: str
    score: float
    emap_score: float
    gap: float
    agreement: float


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(-1) == labels).double().mean())


@torch.no_grad()
def emap_gap(model: MultimodalModel, dataset: MultimodalDataset, *,
             metric: Callable[[Tensor, Tensor], float] = accuracy, batch_size: int = 4096,
             encoders: Encoders | None = None) -> EmapGap:
    """How much better ``f`` scores than its additive projection on ``dataset``: a gap near
    0 means the model's cross-modal interactions do not help on this data."""
    logits = torch.cat([model(rows) for rows, _ in dataset.batches(batch_size)])
    projected = emap_logits(model, dataset.inputs, batch_size=batch_size, encoders=encoders)
    score, emap_score = metric(logits, dataset.labels), metric(projected, dataset.labels)
    agreement = float((logits.argmax(-1) == projected.argmax(-1)).double().mean())
    return EmapGap(getattr(metric, "__name__", "metric"), score, emap_score,
                   score - emap_score, agreement)
