"""The shared contract every public estimator meets (in the style of sklearn's
``check_estimator``): one parametrised test runs each check against each estimator, so a
new estimator is one line in ``ESTIMATORS``.

Checks: a known answer on the additive toy model (cross-modal terms vanish, each modality
keeps its own effect), int and per-row tensor targets agree, per-instance estimators give
the same rows for a batch as for its instances one at a time (dataset-level ones are
equivariant to reordering the rows), any number of modalities including token ones gives
finite results, and inputs are never modified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from estimators.ablation import ablate, modality_shapley
from estimators.attribution import attribute
from estimators.emap import emap_logits
from estimators.faithfulness import deletion_insertion_curves
from estimators.interaction_types import interaction_types
from estimators.interactions import cross_hessian, integrated_hessians, interaction_heatmap
from estimators.model import MultimodalModel
from tests.fixtures.models import additive, cnn_text, three_modal

Inputs = dict[str, Tensor]
Run = Callable[[MultimodalModel, Inputs, "int | Tensor"], Tensor]


def _first_two(model: MultimodalModel) -> tuple[str, str]:
    return model.spec.names[0], model.spec.names[1]


def _own_effects(model: MultimodalModel, inputs: Inputs, target: int) -> Tensor:
    """Additive toy model f = g(a) + h(b): each modality's exact own effect at ``target``."""
    g, h = model.module.g, model.module.h
    return torch.stack([(g(inputs["a"]) - g(torch.zeros_like(inputs["a"])))[:, target],
                        (h(inputs["b"]) - h(torch.zeros_like(inputs["b"])))[:, target]], 1)


def _ig_totals(model, inputs, target):
    result = attribute(model, inputs, target=target, n_steps=32)
    return torch.stack([result.totals[n] for n in model.spec.names], 1)


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


@dataclass(frozen=True)
class Estimator:
    name: str
    run: Run
    additive_answer: Callable[[MultimodalModel, Inputs, int], Tensor]
    per_instance: bool = True
    atol: float = 1e-5


def _zeros_like_run(run: Run) -> Callable[[MultimodalModel, Inputs, int], Tensor]:
    return lambda model, inputs, target: torch.zeros_like(run(model, inputs, target))


def _own_gradients(model: MultimodalModel, inputs: Inputs, target: int) -> tuple[Tensor, Tensor]:
    a, b = (inputs[n].clone().requires_grad_() for n in ("a", "b"))
    ga = torch.autograd.grad(model.module.g(a)[:, target].sum(), a)[0]
    gb = torch.autograd.grad(model.module.h(b)[:, target].sum(), b)[0]
    return ga, gb


def _saliency(m, x, t):
    return torch.cat([_flat(v) for v in
                      attribute(m, x, target=t, method="saliency").attributions.values()], 1)


def _saliency_answer(m, x, t):
    ga, gb = _own_gradients(m, x, t)
    return torch.cat([ga.abs(), gb.abs()], 1)


def _ixg_totals(m, x, t):
    return torch.stack(list(attribute(m, x, target=t, method="input_x_gradient")
                            .totals.values()), 1)


def _ixg_answer(m, x, t):
    ga, gb = _own_gradients(m, x, t)
    return torch.stack([(ga * x["a"]).sum(1), (gb * x["b"]).sum(1)], 1)


def _hessian(m, x, t):
    return _flat(cross_hessian(m, x, *_first_two(m), target=t))


def _heatmap(m, x, t):
    return _flat(interaction_heatmap(m, x, *_first_two(m), target=t).matrix)


def _ih(m, x, t):
    return _flat(integrated_hessians(m, x, *_first_two(m), target=t, n_steps=8).interactions)


def _types(m, x, t):
    return interaction_types(m, x, target=t).interaction[:, None]


def _drop_last(m, x, t):
    return ablate(m, x, [m.spec.names[-1]])[:, :2]


def _drop_last_answer(m, x, t):
    return (m.module.g(x["a"]) + m.module.h(torch.zeros_like(x["b"])))[:, :2]


def _shapley(m, x, t):
    return modality_shapley(m, x, target=t).values


def _deletion_ends(m, x, t):
    first = m.spec.names[0]
    curves = deletion_insertion_curves(m, x, attribute(m, x, target=t, method="saliency"),
                                       target=t, n_steps=4, modalities=[first])[first]
    return curves.deletion[:, [0, -1]]


def _deletion_ends_answer(m, x, t):
    full = torch.softmax(m(x), -1)[:, t]
    without_a = torch.softmax(m.module.g(torch.zeros_like(x["a"])) + m.module.h(x["b"]), -1)
    return torch.stack([full, without_a[:, t]], 1)


def _emap(m, x, t):
    return emap_logits(m, x, batch_size=7)


ESTIMATORS: list[Estimator] = [
    Estimator("integrated_gradients", _ig_totals, _own_effects, atol=1e-4),
    Estimator("saliency", _saliency, _saliency_answer),
    Estimator("input_x_gradient", _ixg_totals, _ixg_answer),
    Estimator("cross_hessian", _hessian, _zeros_like_run(_hessian)),
    Estimator("interaction_heatmap", _heatmap, _zeros_like_run(_heatmap)),
    Estimator("integrated_hessians", _ih, _zeros_like_run(_ih)),
    Estimator("ablate", _drop_last, _drop_last_answer),
    Estimator("modality_shapley", _shapley, _own_effects),
    Estimator("interaction_types", _types, _zeros_like_run(_types)),
    Estimator("deletion_insertion_curves", _deletion_ends, _deletion_ends_answer),
    Estimator("emap_logits", _emap, lambda m, x, t: m(x), per_instance=False),
]


def check_additive_answer(est: Estimator) -> None:
    model = additive()
    inputs = model.spec.example_inputs(3, seed=11)
    torch.testing.assert_close(est.run(model, inputs, 1), est.additive_answer(model, inputs, 1)
                               .detach(), atol=est.atol, rtol=1e-4)


def check_int_and_tensor_targets_agree(est: Estimator) -> None:
    model = cnn_text()
    inputs = model.spec.example_inputs(3, seed=12)
    torch.testing.assert_close(est.run(model, inputs, 2),
                               est.run(model, inputs, torch.tensor([2, 2, 2])))


def check_batch_consistency(est: Estimator) -> None:
    model = cnn_text()
    inputs = model.spec.example_inputs(3, seed=13)
    target = torch.tensor([0, 2, 1])
    whole = est.run(model, inputs, target)
    if est.per_instance:
        rows = [est.run(model, {k: v[i:i + 1] for k, v in inputs.items()}, target[i:i + 1])
                for i in range(3)]
        torch.testing.assert_close(whole, torch.cat(rows), atol=1e-5, rtol=1e-4)
    else:
        order = torch.tensor([2, 0, 1])
        permuted = est.run(model, {k: v[order] for k, v in inputs.items()}, target[order])
        torch.testing.assert_close(permuted, whole[order], atol=1e-5, rtol=1e-4)


def check_any_number_of_modalities(est: Estimator) -> None:
    model = three_modal()
    inputs = model.spec.example_inputs(2, seed=14)
    out = est.run(model, inputs, 1)
    assert out.shape[0] == 2 and torch.isfinite(out).all()


def check_inputs_untouched(est: Estimator) -> None:
    model = cnn_text()
    inputs = model.spec.example_inputs(2, seed=15)
    before = {k: v.clone() for k, v in inputs.items()}
    est.run(model, inputs, 0)
    for k, v in inputs.items():
        assert torch.equal(v, before[k]) and not v.requires_grad


CHECKS = [check_additive_answer, check_int_and_tensor_targets_agree, check_batch_consistency,
          check_any_number_of_modalities, check_inputs_untouched]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.name)
def test_estimator_contract(est: Estimator, check: Callable[[Estimator], None]) -> None:
    check(est)
