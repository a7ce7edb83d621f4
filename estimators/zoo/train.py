"""Train the demo scenarios' models and write the shipped weights (``crosslens demo train``).

Training is deterministic: every model is initialised from its recipe's ``seed`` and shuffled
by a generator seeded from it, on one torch thread (tiny models run far faster on one
thread on a busy machine, and results do not depend on the thread count). Optimiser: AdamW
with a linear learning-rate decay to zero, cross-entropy loss. Tabular inputs are
standardised with statistics of the training split, stored as buffers with the weights.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from estimators.data import MultimodalDataset
from estimators.model import MultimodalModel
from estimators.zoo.encoders import set_standardisation
from estimators.zoo.pretrained import PretrainedTextEncoder
from estimators.zoo.registry import build, save_model
from estimators.zoo.scenarios.base import Recipe, Scenario


@torch.no_grad()
def accuracy(model: nn.Module, dataset: MultimodalDataset, batch_size: int = 512) -> float:
    """Fraction of ``dataset`` whose argmax logit equals the label."""
    was_training = model.training
    model.eval()
    correct = 0
    for inputs, labels in dataset.batches(batch_size):
        out = model(inputs) if isinstance(model, MultimodalModel) else model(**inputs)
        correct += int((out.argmax(-1) == labels).sum())
    model.train(was_training)
    return correct / len(dataset)


def fit(module: nn.Module, data: MultimodalDataset, recipe: Recipe) -> nn.Module:
    """Train ``module`` (called as ``module(**inputs)``) on ``data`` following ``recipe``."""
    seed = int(recipe.params.get("seed", 0))
    gen = torch.Generator().manual_seed(seed)
    trainable = [p for p in module.parameters() if p.requires_grad]   # not frozen backbones
    optimiser = torch.optim.AdamW(trainable, lr=recipe.lr,
                                  weight_decay=recipe.weight_decay)
    steps_per_epoch = -(-len(data) // recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - step / total)
    module.train()
    with contextlib.ExitStack() as stack:
        for sub in module.modules():   # frozen pretrained text encoders: once per distinct text
            if isinstance(sub, PretrainedTextEncoder):
                stack.enter_context(sub.memoised())
        _epochs(module, data, recipe, optimiser, schedule, gen)
    return module.eval()


def _epochs(module: nn.Module, data: MultimodalDataset, recipe: Recipe,
            optimiser: torch.optim.Optimizer, schedule: Any, gen: torch.Generator) -> None:
    for _ in range(recipe.epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), recipe.batch_size):
            rows = order[start:start + recipe.batch_size]
            logits = module(**{k: v[rows] for k, v in data.inputs.items()})
            loss = nn.functional.cross_entropy(logits, data.labels[rows])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()


def train_model(scenario: Scenario, recipe: Recipe, train: MultimodalDataset,
                test: MultimodalDataset, out_dir: Path) -> dict[str, Any]:
    """Train one recipe, save it to ``out_dir`` and return its manifest entry."""
    params = scenario.model_params(recipe)
    start, cpu_start = time.perf_counter(), time.process_time()
    module = build(recipe.architecture, params)
    with torch.no_grad():
        for m in scenario.spec.modalities:
            if m.kind == "tabular":
                set_standardisation(module, m.name, train.inputs[m.name])
    fit(module, train, recipe)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    spec = scenario.model_spec(recipe)
    save_model(module, recipe.architecture, params, spec, out_dir, recipe.name)
    return {"name": recipe.name, "architecture": recipe.architecture,
            "test_accuracy": round(accuracy(MultimodalModel(module, spec), test), 4),
            "train_accuracy": round(accuracy(module, train), 4),
            "train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu_seconds, 1),
            "n_parameters": sum(p.numel() for p in module.parameters()),
            "n_trainable": sum(p.numel() for p in module.parameters() if p.requires_grad)}


def train_scenario(scenario: Scenario, out_dir: Path | None = None,
                   log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every recipe of ``scenario``; write weights, configs and ``manifest.json``."""
    out_dir = Path(out_dir) / scenario.name if out_dir is not None else scenario.directory
    train, test = scenario.dataset("train"), scenario.dataset("test")
    entries = []
    for recipe in scenario.recipes:
        entry = train_model(scenario, recipe, train, test, out_dir)
        log(f"{scenario.name:>24} {entry['name']:<14} test acc {entry['test_accuracy']:.3f} "
            f"(train {entry['train_accuracy']:.3f}), {entry['n_parameters']:>6} params, "
            f"{entry['train_seconds']:.1f} s wall, {entry['train_cpu_seconds']:.1f} s CPU")
        entries.append(entry)
    manifest = {"scenario": scenario.name, "n_train": len(train), "n_test": len(test),
                "torch": torch.__version__, "models": entries}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return entries


def train_all(out_dir: Path | None = None, names: Iterable[str] | None = None,
              log: Callable[[str], None] = print) -> dict[str, list[dict[str, Any]]]:
    """Train the named scenarios (default: all) on one torch thread."""
    from estimators.zoo.scenarios import get_scenario, list_scenarios

    scenarios = ([get_scenario(n) for n in names] if names is not None else list_scenarios())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {s.name: train_scenario(s, out_dir, log) for s in scenarios}
    finally:
        torch.set_num_threads(threads)
