"""Model selection by interaction profile (Liang et al. 2023, "Quantifying & Modeling
Multimodal Interactions", §5.3; the lecture's "What models are suitable for my data?").

The data's PID says which interactions the task needs; a model's PID (of its predictions,
``estimators.pid.model_pid``) says which it has learned. The model whose profile is closest
to the data's is the best match.

Distance. Each PID is turned into its **interaction profile**, the four atoms divided by
their sum (``[R, U1, U2, S] / I(X1,X2;Y)``, a point on the probability simplex), and two
profiles are compared by **total variation**, ``½ Σ |a_k - b_k|`` ∈ [0, 1]: the share of
information that would have to move from one kind of interaction to another to turn one
profile into the other. Profiles, not raw bits, because a model's predictions carry a
different total amount of information than the labels (a deterministic, confident model
often carries more); what should match is *how* the information is composed. A PID with
no information at all has no profile; it is placed at distance 1 from everything, except
another empty one (distance 0). With several modality pairs (``{"a|b": PIDResult}``), the
distance is the mean over the pairs both sides have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from estimators.pid import PIDResult

_EMPTY = 1e-12      # bits: below this a PID carries no information and has no profile


@dataclass(frozen=True)
class ModelMatch:
    """One model's place in a ranking: its distance to the data's profile (0 = same)."""

    name: str
    distance: float
    profile: dict[str, list[float]]


def interaction_profile(result: PIDResult) -> np.ndarray | None:
    """``[R, U1, U2, S]`` as shares of their sum, or ``None`` when the sum is ~0 bits."""
    atoms = np.clip(result.atoms(), 0.0, None)
    total = float(atoms.sum())
    return atoms / total if total > _EMPTY else None


def profile_distance(a: PIDResult, b: PIDResult) -> float:
    """Total-variation distance between two interaction profiles, in [0, 1]."""
    pa, pb = interaction_profile(a), interaction_profile(b)
    if pa is None or pb is None:
        return 0.0 if pa is None and pb is None else 1.0
    return float(0.5 * np.abs(pa - pb).sum())


def _as_pairs(result: PIDResult | Mapping[str, PIDResult]) -> dict[str, PIDResult]:
    return {"pair": result} if isinstance(result, PIDResult) else dict(result)


def rank_models(data_pid: PIDResult | Mapping[str, PIDResult],
                model_pids: Mapping[str, PIDResult | Mapping[str, PIDResult]]
                ) -> list[ModelMatch]:
    """Models ordered from best to worst match of the data's interaction profile.

    ``data_pid``: a ``PIDResult`` or ``{"a|b": PIDResult}`` (as ``dataset_pid`` returns);
    ``model_pids``: ``{model name: same shape}`` (as ``model_pid`` returns). Ties keep the
    given order.
    """
    data = _as_pairs(data_pid)
    matches = []
    for name, result in model_pids.items():
        model = _as_pairs(result)
        shared = [k for k in data if k in model]
        if not shared:
            raise ValueError(f"model {name!r} has no modality pair in common with the data "
                             f"(data: {sorted(data)}, model: {sorted(model)})")
        distance = float(np.mean([profile_distance(data[k], model[k]) for k in shared]))
        profile = {k: [float(v) for v in (interaction_profile(model[k]) if
                                          interaction_profile(model[k]) is not None
                                          else np.zeros(4))] for k in shared}
        matches.append(ModelMatch(name=name, distance=distance, profile=profile))
    return sorted(matches, key=lambda m: m.distance)
