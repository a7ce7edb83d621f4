"""What a demo scenario is: a regenerable dataset, a model spec and trained zoo models.

A scenario's data are generated, never downloaded: ``dataset(split)`` rebuilds the same
tensors from fixed seeds every time, so the shipped weights can be checked against it.
Trained models live in ``estimators/zoo/weights/<scenario>/`` as ``<model>.json`` (the
architecture config) + ``<model>.safetensors``, and ``manifest.json`` records each model's
test accuracy and training time (written by ``estimators.zoo.train``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from estimators.data import MultimodalDataset
from estimators.model import ModelSpec, MultimodalModel
from estimators.zoo.architectures import modality_params, token_layout
from estimators.zoo.registry import load_model, read_config

Split = Literal["train", "test", "all"]
SPLITS: tuple[str, ...] = ("train", "test", "all")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class Recipe:
    """How to train one model of a scenario: architecture, its params, optimiser settings."""

    name: str
    architecture: str
    params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 128
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class ScenarioModel:
    """One shipped model: where its config and weights are and how well it does."""

    name: str
    architecture: str
    config_path: Path
    weights_path: Path
    test_accuracy: float
    train_seconds: float
    n_parameters: int
    train_cpu_seconds: float | None = None

    @cached_property
    def spec(self) -> ModelSpec:
        return read_config(self.config_path)[2]

    @cached_property
    def params(self) -> dict[str, Any]:
        return read_config(self.config_path)[1]

    def load(self) -> MultimodalModel:
        return load_model(self.config_path, self.weights_path)


@dataclass(frozen=True, eq=False)
class Scenario:
    """A demo: plain-language ``title``/``description``, a dataset generator, models."""

    name: str
    title: str
    description: str
    spec: ModelSpec
    generate: Callable[[str], MultimodalDataset] = field(repr=False)
    recipes: tuple[Recipe, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)
    weights_dir: Path = WEIGHTS_DIR

    def dataset(self, split: Split = "test") -> MultimodalDataset:
        """The scenario's data, regenerated deterministically (same tensors every call)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, not {split!r}")
        return self.generate(split)

    def model_params(self, recipe: Recipe) -> dict[str, Any]:
        """Full architecture params for ``recipe`` on this scenario's spec."""
        return {"modalities": modality_params(self.spec), "n_classes": self.spec.n_classes,
                **recipe.params}

    def model_spec(self, recipe: Recipe) -> ModelSpec:
        """The scenario's spec, with the token layout for transformer models."""
        if recipe.architecture != "transformer":
            return self.spec
        layout = token_layout(self.model_params(recipe))
        return self.spec.model_copy(update={"token_layout": layout})

    @property
    def directory(self) -> Path:
        return self.weights_dir / self.name

    @property
    def models(self) -> list[ScenarioModel]:
        """The trained models shipped for this scenario (empty until ``demo train`` ran)."""
        manifest = self.directory / "manifest.json"
        if not manifest.exists():
            return []
        entries = json.loads(manifest.read_text())["models"]
        return [ScenarioModel(name=e["name"], architecture=e["architecture"],
                              config_path=self.directory / f"{e['name']}.json",
                              weights_path=self.directory / f"{e['name']}.safetensors",
                              test_accuracy=float(e["test_accuracy"]),
                              train_seconds=float(e["train_seconds"]),
                              n_parameters=int(e["n_parameters"]),
                              train_cpu_seconds=e.get("train_cpu_seconds"))
                for e in entries]

    def model(self, name: str) -> ScenarioModel:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"scenario {self.name!r} has no model {name!r}; it has "
                       f"{[m.name for m in self.models]}")


def split_indices(n: int, test_fraction: float, seed: int) -> dict[str, Any]:
    """Deterministic disjoint train/test index arrays over ``range(n)``."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    return {"test": np.sort(order[:n_test]), "train": np.sort(order[n_test:]),
            "all": np.arange(n)}
