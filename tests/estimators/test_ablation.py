"""Ablation, exact modality Shapley values and robustness curves."""

from __future__ import annotations

import itertools
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from estimators.ablation import (
    ablate,
    modality_importance,
    modality_shapley,
    robustness_curve,
    shapley_weights,
)
from estimators.attribution import feature_means
from estimators.data import MultimodalDataset
from tests.fixtures.models import additive, bilinear, cnn_text, three_modal


def _no_pad_text(model, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    inputs = model.spec.example_inputs(n, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    inputs["text"] = torch.randint(2, 11, inputs["text"].shape, generator=gen)
    return inputs


def test_dropping_nothing_is_the_model_and_dropping_b_of_an_additive_model_zeroes_h():
    model = additive()
    inputs = model.spec.example_inputs(4)
    torch.testing.assert_close(ablate(model, inputs, []), model(inputs).detach())
    dropped = ablate(model, inputs, ["b"])
    expected = model.module.g(inputs["a"]) + model.module.h(torch.zeros_like(inputs["b"]))
    torch.testing.assert_close(dropped, expected.detach())


def test_dropping_text_with_the_mask_baseline_equals_feeding_all_mask_tokens():
    model = cnn_text()
    inputs = _no_pad_text(model, 3)
    masked_ids = {**inputs, "text": torch.ones_like(inputs["text"])}
    torch.testing.assert_close(ablate(model, inputs, ["text"], baselines="mask"),
                               model(masked_ids).detach())


def test_mean_replacement_uses_the_given_means_and_asks_for_them_otherwise():
    model = additive()
    inputs = model.spec.example_inputs(5)
    with pytest.raises(ValueError, match="feature_means"):
        ablate(model, inputs, ["a"], replace="mean")
    means = feature_means(model, inputs)
    out = ablate(model, inputs, ["a"], replace="mean", means=means, output="softmax")
    expected = torch.softmax(model.module.g(inputs["a"].mean(0, keepdim=True))
                             + model.module.h(inputs["b"]), -1)
    torch.testing.assert_close(out, expected.detach())
    with pytest.raises(ValueError, match="cannot drop"):
        ablate(model, inputs, ["c"])


def test_additive_shapley_values_are_each_modality_own_change():
    model = additive()
    inputs = model.spec.example_inputs(4)
    result = modality_shapley(model, inputs, target=1)
    g, h = model.module.g, model.module.h
    torch.testing.assert_close(result.as_dict()["a"],
                               (g(inputs["a"]) - g(torch.zeros(1, 5)))[:, 1].detach())
    torch.testing.assert_close(result.as_dict()["b"],
                               (h(inputs["b"]) - h(torch.zeros(1, 4)))[:, 1].detach())


def test_bilinear_output_is_split_evenly_between_the_two_modalities():
    model = bilinear()
    inputs = model.spec.example_inputs(3)
    result = modality_shapley(model, inputs, target=torch.tensor([0, 1, 2]))
    f = model(inputs).detach().gather(1, torch.tensor([[0], [1], [2]])).squeeze(1)
    torch.testing.assert_close(result.values, torch.stack([f / 2, f / 2], 1))
    torch.testing.assert_close(result.coalition(["a", "b"]), f)
    assert result.coalition([]).abs().max() == 0


def test_shapley_values_equal_the_average_marginal_contribution_over_all_orderings():
    model = three_modal()
    inputs = model.spec.example_inputs(2)
    result = modality_shapley(model, inputs, target=2, baselines="pad", batch_size=5)
    names = result.names
    expected = torch.zeros(2, 3)
    orders = list(itertools.permutations(range(3)))
    for order in orders:
        before: list[str] = []
        for m in order:
            gain = result.coalition([*before, names[m]]) - result.coalition(before)
            expected[:, m] += gain / len(orders)
            before.append(names[m])
    torch.testing.assert_close(result.values, expected)
    full = ablate(model, inputs, [], output="logits")[:, 2]
    torch.testing.assert_close(result.coalition(names), full)


@given(hnp.arrays(np.float32, (3, 4), elements=st.floats(-2, 2, width=32)))
def test_shapley_values_are_efficient(vitals):
    model = three_modal()
    inputs = {**model.spec.example_inputs(3), "vitals": torch.from_numpy(vitals)}
    result = modality_shapley(model, inputs, target=0, output="softmax", baselines="mask")
    torch.testing.assert_close(result.values.sum(1),
                               result.coalition(result.names) - result.coalition([]),
                               atol=1e-6, rtol=1e-5)


def test_shapley_weights_give_zero_for_constant_games_and_sum_to_full_minus_empty():
    for m in range(1, 6):
        weights = shapley_weights(m)
        assert weights.sum(0).abs().max() < 1e-12  # φ of a constant game is 0
        expected = torch.zeros(2**m, dtype=torch.float64)
        expected[0], expected[-1] = -1.0, 1.0  # Σ_m φ_m = v(M) − v(∅)
        torch.testing.assert_close(weights.sum(1), expected)


def test_robustness_curve_starts_at_clean_accuracy_and_full_mask_equals_ablation():
    model = cnn_text()
    inputs = _no_pad_text(model, 24, seed=3)
    labels = model(inputs).argmax(-1)
    data = MultimodalDataset(inputs, labels)
    masked = robustness_curve(model, data, kind="mask", levels=[0.0, 0.5, 1.0],
                              baselines="mask", batch_size=10)
    assert masked.clean == 1.0
    assert all(float(acc[0]) == 1.0 for acc in masked.accuracy.values())
    for name in ("image", "text"):
        ablated = ablate(model, inputs, [name], baselines="mask").argmax(-1)
        assert math.isclose(float(masked.accuracy[name][-1]),
                            float((ablated == labels).float().mean()))
    noisy = robustness_curve(model, data, kind="noise", levels=[0.0, 1.0], seed=1)
    again = robustness_curve(model, data, kind="noise", levels=[0.0, 1.0], seed=1)
    torch.testing.assert_close(noisy.accuracy["image"], again.accuracy["image"])
    default = robustness_curve(model, data, kind="mask", modalities=["text"])
    assert default.levels == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert default.accuracy["text"].shape == (5,)
    with pytest.raises(ValueError, match="fractions"):
        robustness_curve(model, data, kind="mask", levels=[2.0])


def test_modality_importance_averages_shapley_values_for_the_predicted_class():
    model = additive()
    inputs = model.spec.example_inputs(12)
    data = MultimodalDataset(inputs, torch.zeros(12, dtype=torch.long))
    summary = modality_importance(model, data, batch_size=5)
    phi = modality_shapley(model, inputs, target=model(inputs).argmax(-1), output="softmax")
    assert math.isclose(summary["a"]["mean"], float(phi.values[:, 0].mean()), abs_tol=1e-6)
    assert math.isclose(summary["b"]["mean_abs"], float(phi.values[:, 1].abs().mean()),
                        abs_tol=1e-6)
