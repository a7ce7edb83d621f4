"""Interactions benchmark: synthetic two-modality data with known PID, four fusion models each.

One scenario per kind of ``estimators.synthetic.make_dataset`` (redundancy, unique1,
unique2, synergy, mixed), each trained with late, early and tensor fusion and the
transformer. On additive data (redundancy, unique) every architecture fits; on synergistic
data (label = a XOR b) the additive late-fusion model cannot, which the interaction views
(cross-modal Hessian, EMAP gap) and the PID model-selection ranking make visible. The true
PID (bits) is in ``Scenario.facts["true_pid"]``.
"""

from __future__ import annotations

from functools import cache, partial

import torch

from estimators import synthetic
from estimators.data import MultimodalDataset
from estimators.model import ModalitySpec, ModelSpec
from estimators.zoo.scenarios.base import Recipe, Scenario

N_TRAIN, N_TEST = 2000, 1000
TITLES = {"redundancy": "redundant", "unique1": "unique to x1", "unique2": "unique to x2",
          "synergy": "synergistic", "mixed": "mixed (R, U1, U2, S)"}


@cache
def _split(kind: str, split: str) -> dict:
    offset = synthetic.KINDS.index(kind)
    seed, n = (1000 + offset, N_TRAIN) if split == "train" else (2000 + offset, N_TEST)
    return synthetic.make_dataset(kind, n, seed=seed)


def generate(kind: str, split: str) -> MultimodalDataset:
    parts = [_split(kind, s) for s in (("train", "test") if split == "all" else (split,))]
    inputs = {name: torch.cat([p["inputs"][name] for p in parts]) for name in ("x1", "x2")}
    labels = torch.cat([p["labels"] for p in parts])
    prefixes = ("train", "test") if split == "all" else (split,)
    ids = [f"{prefix}-{i:04d}" for prefix, p in zip(prefixes, parts, strict=True)
           for i in range(len(p["labels"]))]
    return MultimodalDataset(inputs, labels, ids)


def _spec(kind: str) -> ModelSpec:
    sample = _split(kind, "test")
    dim = sample["inputs"]["x1"].shape[1]
    return ModelSpec(
        modalities=[ModalitySpec(name=name, kind="tabular", shape=(dim,),
                                 display={"feature_names": [f"{name}[{i}]" for i in range(dim)],
                                          "units": [""] * dim})
                    for name in ("x1", "x2")],
        classes=list(sample["classes"]))


def _recipes(kind: str) -> tuple[Recipe, ...]:
    epochs = 30 if kind == "mixed" else 15  # 16 classes need longer
    common = {"epochs": epochs, "lr": 1e-2, "batch_size": 200}
    return (
        Recipe("late_fusion", "late_fusion", {"dim": 16, "hidden": 32, "seed": 0}, **common),
        Recipe("early_fusion", "early_fusion", {"dim": 16, "hidden": 32, "seed": 0}, **common),
        Recipe("tensor_fusion", "tensor_fusion",
               {"dim": 16, "hidden": 32, "rank": 4, "seed": 0}, **common),
        Recipe("transformer", "transformer",
               {"dim": 16, "heads": 2, "layers": 1, "mlp": 32, "seed": 0},
               epochs=epochs, lr=5e-3, batch_size=200),
    )


def scenario(kind: str) -> Scenario:
    truth = _split(kind, "test")["pid"]
    bits = {k: round(float(getattr(truth, k)), 4)
            for k in ("redundancy", "unique1", "unique2", "synergy", "total")}
    return Scenario(
        name=f"synthetic-{kind}",
        title=f"Interactions benchmark: {TITLES[kind]}",
        description=(
            "Synthetic two-modality data (x1, x2: 8 numbers each) where "
            f"{_split(kind, 'test')['description']}. "
            f"The true information decomposition is known exactly: redundancy "
            f"{bits['redundancy']:g}, unique to x1 {bits['unique1']:g}, unique to x2 "
            f"{bits['unique2']:g}, synergy {bits['synergy']:g} bits. Four fusion models are "
            "trained on it; compare how much each one relies on combining the two inputs."),
        spec=_spec(kind),
        generate=partial(generate, kind),
        recipes=_recipes(kind),
        facts={"true_pid": bits, "kind": kind},
    )


def scenarios() -> list[Scenario]:
    return [scenario(kind) for kind in synthetic.KINDS]
