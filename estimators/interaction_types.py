"""Per-instance interaction types in the spirit of M2Lens (Wang et al. 2021, "M2Lens:
Visualizing and Explaining Multimodal Models for Sentiment Analysis"): does one modality
*dominate* the prediction, do the modalities *complement* each other, or do they
*conflict*?

M2Lens's exact rule is not published in a reusable form, so crosslens states its own,
built on the exact modality Shapley values of ``estimators.ablation.modality_shapley``
(the output change from all modalities absent to all present, ``Δ = v(M) − v(∅)``, split
fairly among the modalities, ``Σ_m φ_m = Δ``). With shares ``s_m = φ_m / Σ_k |φ_k|``:

1. ``none``: ``Σ_k |φ_k|`` is negligible (no modality moves the output);
2. ``dominance``: one modality's ``|s_m| ≥ dominance`` (default 0.8): it alone explains
   the prediction; ``dominant`` names it;
3. ``conflict``: otherwise, if some modality pushes against the direction of ``Δ`` with
   ``|s_m| ≥ min_share`` (default 0.1);
4. ``complement``: otherwise: the modalities push the same way and share the work.

Independently, ``synergistic`` flags instances whose pure interaction term
``I = v(M) − v(∅) − Σ_m (v({m}) − v(∅))`` (what the unimodal effects do not explain) is at
least ``synergy`` (default 0.5) of ``|Δ|``: the modalities mean something together that
neither means alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from estimators.ablation import Replace, modality_shapley
from estimators.attribution import Baselines, Target
from estimators.model import MultimodalModel, Output

TYPES: tuple[str, ...] = ("dominance", "complement", "conflict", "none")

RULE = ("Each modality's share of the output change is its exact Shapley value over "
        "modalities (absent = replaced by its baseline), divided by the sum of absolute "
        "values. Dominance: one modality holds at least {dominance:.0%} of it. Conflict: "
        "otherwise, a modality holding at least {min_share:.0%} pushes against the overall "
        "change. Complement: otherwise (the modalities push the same way). Synergistic: the "
        "part no single modality explains is at least {synergy:.0%} of the change.")


@dataclass(frozen=True)
class InteractionTypes:
    """Per instance: ``types`` (one of ``TYPES``), ``dominant`` modality (or ``None``),
    ``shapley`` ``[B, M]``, ``shares`` ``[B, M]``, pure ``interaction`` term ``[B]``,
    ``synergistic`` ``[B]`` bool; ``rule`` states the thresholds used, for the UI."""

    names: list[str]
    types: list[str]
    dominant: list[str | None]
    shapley: Tensor
    shares: Tensor
    interaction: Tensor
    synergistic: Tensor
    rule: str

    def counts(self) -> dict[str, int]:
        """How many instances have each type (every type present, possibly 0)."""
        found = Counter(self.types)
        return {t: found.get(t, 0) for t in TYPES}


def classify(shapley: Tensor, interaction: Tensor, names: list[str], *,
             dominance: float = 0.8, min_share: float = 0.1, synergy: float = 0.5,
             eps: float = 1e-6) -> InteractionTypes:
    """Apply the rule (module docstring) to Shapley values ``[B, M]`` and interaction terms
    ``[B]``; kept separate from the model so the rule is testable on constructed cases."""
    if not 0.5 < dominance <= 1 or not 0 < min_share < 1 or synergy <= 0:
        raise ValueError("need 0.5 < dominance <= 1, 0 < min_share < 1 and synergy > 0")
    scale = shapley.abs().sum(1)
    shares = shapley / scale.clamp_min(eps).unsqueeze(1)
    change = shapley.sum(1)
    top_share, top = shares.abs().max(1)
    against = (shares * torch.sign(change).unsqueeze(1) <= -min_share).any(1)
    code = torch.full_like(change, TYPES.index("complement"), dtype=torch.long)
    code[against] = TYPES.index("conflict")
    code[top_share >= dominance] = TYPES.index("dominance")
    code[scale < eps] = TYPES.index("none")
    types = [TYPES[c] for c in code.tolist()]
    dominant = [names[m] if t == "dominance" else None
                for t, m in zip(types, top.tolist(), strict=True)]
    synergistic = (interaction.abs() >= synergy * change.abs()) & (interaction.abs() > eps)
    rule = RULE.format(dominance=dominance, min_share=min_share, synergy=synergy)
    return InteractionTypes(list(names), types, dominant, shapley, shares, interaction,
                            synergistic, rule)


def interaction_types(model: MultimodalModel, inputs: Mapping[str, Tensor], *,
                      target: Target, output: Output = "logits",
                      replace: Replace = "baseline", baselines: Baselines = "zeros",
                      means: Mapping[str, Tensor] | None = None, dominance: float = 0.8,
                      min_share: float = 0.1, synergy: float = 0.5) -> InteractionTypes:
    """Dominance / complement / conflict and the synergy flag for every instance of
    ``inputs`` (see the module docstring for the rule), explaining ``f_target``."""
    result = modality_shapley(model, inputs, target=target, output=output, replace=replace,
                              baselines=baselines, means=means)
    empty = result.coalition([])
    unimodal = sum(result.coalition([n]) - empty for n in result.names)
    interaction = result.coalition(result.names) - empty - unimodal
    return classify(result.values, interaction, result.names, dominance=dominance,
                    min_share=min_share, synergy=synergy)
