"""How far to trust an attribution map: deletion/insertion curves and method agreement.

- Deletion / insertion (Petsiuk et al. 2018, "RISE"; Samek et al. 2017 "region
  perturbation"): remove a modality's elements (pixels, tokens, time steps, features) in
  the order an attribution ranks them, most important first, replacing them by the
  baseline, and record the target output; insertion starts from the baseline and puts
  them back in the same order. A faithful map makes the deletion curve fall fast (low area)
  and the insertion curve rise fast (high area). Other modalities keep their values.
- Method agreement (Krishna et al. 2022, "The Disagreement Problem in Explainable Machine
  Learning"): for every pair of methods, the Spearman rank correlation of the elements'
  absolute attributions and the overlap of their top-k elements. Low agreement is a reason
  to look at the faithfulness curves before believing any one map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from estimators.attribution import (
    AttributionResult,
    Baselines,
    Target,
    element_layout,
    feature_baselines,
    to_elements,
)
from estimators.model import MultimodalModel, Output, apply_output, select_target


@dataclass(frozen=True)
class FaithfulnessCurves:
    """``fractions`` ``[S+1]`` of elements removed (deletion) or restored (insertion);
    ``deletion`` / ``insertion`` ``[B, S+1]`` target outputs; areas under them ``[B]``
    (trapezoid over the fraction axis) and ``score = insertion_auc − deletion_auc``."""

    modality: str
    fractions: Tensor
    deletion: Tensor
    insertion: Tensor
    deletion_auc: Tensor
    insertion_auc: Tensor

    @property
    def score(self) -> Tensor:
        return self.insertion_auc - self.deletion_auc


def _attribution_map(attributions: AttributionResult | Mapping[str, Tensor]
                     ) -> Mapping[str, Tensor]:
    if isinstance(attributions, AttributionResult):
        return attributions.attributions
    return attributions


@torch.no_grad()
def deletion_insertion_curves(model: MultimodalModel, inputs: Mapping[str, Tensor],
                              attributions: AttributionResult | Mapping[str, Tensor], *,
                              target: Target, modalities: Sequence[str] | None = None,
                              n_steps: int = 10, baselines: Baselines = "zeros",
                              means: Mapping[str, Tensor] | None = None,
                              output: Output = "softmax", batch_size: int = 1024
                              ) -> dict[str, FaithfulnessCurves]:
    """Deletion and insertion curves per modality for one attribution (``attribute``'s
    result or ``{name: [B, *feature_shape]}``). Elements are ranked by their summed signed
    attribution (``to_elements`` with size 1); step k removes/restores the top
    ``round(k/n_steps · E)`` of them; all steps run as one batched forward (chunked by
    ``batch_size`` rows)."""
    if n_steps < 1:
        raise ValueError("n_steps must be at least 1")
    attr = _attribution_map(attributions)
    names = list(modalities) if modalities is not None else list(attr)
    features = model.embed(inputs)
    refs = feature_baselines(model, inputs, features, baselines, means=means)
    batch = features[model.spec.names[0]].shape[0]
    fractions = torch.linspace(0, 1, n_steps + 1)
    tgt = torch.as_tensor(target).long()
    tgt = tgt.expand(batch) if tgt.ndim == 0 else tgt
    steps = n_steps + 1
    curves = {}
    for name in names:
        if name not in features:
            raise ValueError(f"no modality {name!r}; the model has {model.spec.names}")
        x, ref = features[name], refs[name]
        layout = element_layout(model.spec.modality(name), x.shape[1:], size=1)
        scores = to_elements(attr[name].to(x.dtype), layout)  # [B, E]
        n_el = layout.n_elements
        rank = scores.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = most important
        counts = (fractions * n_el).round().long()  # [S+1]
        top = rank.unsqueeze(0) < counts.reshape(-1, 1, 1)  # [S+1, B, E]
        top = top[..., layout.index].reshape(steps * batch, *x.shape[1:])
        xs = x.repeat(steps, *[1] * (x.ndim - 1))
        rs = ref.repeat(steps, *[1] * (x.ndim - 1))
        rows = {n: v.repeat(steps, *[1] * (v.ndim - 1)) for n, v in features.items()}
        ids = {n: inputs[n].repeat(steps, *[1] * (inputs[n].ndim - 1))
               for n in model.token_names}
        outputs = []
        for variant in (torch.where(top, rs, xs), torch.where(top, xs, rs)):
            feats = {**rows, name: variant}
            out = []
            for start in range(0, steps * batch, batch_size):
                sl = slice(start, start + batch_size)
                chunk = {n: v[sl] for n, v in feats.items()}
                raw = {n: ids[n][sl] if n in ids else chunk[n] for n in model.spec.names}
                logits = model.forward_embedded(raw, chunk)
                out.append(select_target(apply_output(logits, output), tgt.repeat(steps)[sl]))
            outputs.append(torch.cat(out).reshape(steps, batch).T)
        deletion, insertion = outputs
        curves[name] = FaithfulnessCurves(
            name, fractions, deletion, insertion,
            torch.trapezoid(deletion, fractions, dim=1),
            torch.trapezoid(insertion, fractions, dim=1))
    return curves


@dataclass(frozen=True)
class MethodAgreement:
    """``spearman`` / ``top_k_overlap``: ``[B, K, K]`` for the K ``methods`` (order as
    given), on the elements of ``modality``; ``k`` is the top-k size used."""

    modality: str
    methods: list[str]
    spearman: Tensor
    top_k_overlap: Tensor
    k: int


def _ranks(x: Tensor) -> Tensor:
    return x.argsort(dim=-1).argsort(dim=-1).to(torch.float64)


def method_agreement(model: MultimodalModel,
                     results: Mapping[str, AttributionResult | Mapping[str, Tensor]], *,
                     modality: str, k: int = 5) -> MethodAgreement:
    """Pairwise agreement between attribution methods (``{method: result}``) on the elements
    of ``modality``, ranked by absolute attribution."""
    if len(results) < 2:
        raise ValueError("method agreement needs at least two methods")
    methods = list(results)
    maps = [_attribution_map(results[m])[modality] for m in methods]
    layout = element_layout(model.spec.modality(modality), maps[0].shape[1:], size=1)
    scores = torch.stack([to_elements(m, layout).abs() for m in maps], 1)  # [B, K, E]
    ranks = _ranks(scores)
    centred = ranks - ranks.mean(-1, keepdim=True)
    norm = centred.norm(dim=-1).clamp_min(1e-12)
    unit = centred / norm.unsqueeze(-1)
    spearman = unit @ unit.transpose(1, 2)
    k = max(1, min(k, layout.n_elements))
    top = torch.zeros_like(scores, dtype=torch.float64)
    top.scatter_(-1, scores.topk(k, dim=-1).indices, 1.0)
    overlap = top @ top.transpose(1, 2) / k
    return MethodAgreement(modality, methods, spearman.to(torch.float32),
                           overlap.to(torch.float32), k)
