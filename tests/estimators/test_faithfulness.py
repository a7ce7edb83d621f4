"""Deletion/insertion curves with exact answers on a model linear in one modality, and
method agreement on constructed attributions."""

from __future__ import annotations

import pytest
import torch

from estimators.ablation import ablate
from estimators.attribution import attribute
from estimators.faithfulness import deletion_insertion_curves, method_agreement
from tests.fixtures.models import cnn_text, product


def test_deletion_curve_removes_the_largest_contributions_of_a_linear_modality_first():
    model = product(da=5, db=4)
    inputs = model.spec.example_inputs(3, seed=2)
    ixg = attribute(model, inputs, target=0, method="input_x_gradient")
    curves = deletion_insertion_curves(model, inputs, ixg, target=0, modalities=["a"],
                                       n_steps=5, output="logits")["a"]
    contributions = ixg.attributions["a"]  # w_i a_i (v·b): exact for f linear in a
    ordered = contributions.sort(dim=1, descending=True).values
    f = model(inputs)[:, 0].detach()
    expected = torch.cat([f[:, None], f[:, None] - ordered.cumsum(1)], 1)
    torch.testing.assert_close(curves.deletion, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(curves.insertion, f[:, None] - expected, atol=1e-5, rtol=1e-5)
    assert curves.fractions.tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_faithful_attribution_scores_higher_than_its_reverse():
    model = product(da=5, db=4)
    inputs = model.spec.example_inputs(6, seed=4)
    ixg = attribute(model, inputs, target=0, method="input_x_gradient").attributions
    good = deletion_insertion_curves(model, inputs, ixg, target=0, output="logits")
    bad = deletion_insertion_curves(model, inputs, {n: -v for n, v in ixg.items()}, target=0,
                                    output="logits")
    assert (good["a"].deletion_auc <= bad["a"].deletion_auc + 1e-6).all()
    assert (good["a"].score >= bad["a"].score - 1e-6).all()


def test_curve_ends_are_the_full_input_and_the_ablated_modality():
    model = cnn_text()
    inputs = model.spec.example_inputs(2, seed=1)
    sal = attribute(model, inputs, target=torch.tensor([1, 2]), method="saliency")
    curves = deletion_insertion_curves(model, inputs, sal, target=torch.tensor([1, 2]),
                                       baselines="pad", n_steps=4, batch_size=3)
    probs = torch.softmax(model(inputs), -1).detach()[torch.arange(2), torch.tensor([1, 2])]
    for name in ("image", "text"):
        dropped = ablate(model, inputs, [name], baselines="pad", output="softmax")
        dropped = dropped[torch.arange(2), torch.tensor([1, 2])]
        c = curves[name]
        torch.testing.assert_close(c.deletion[:, 0], probs)
        torch.testing.assert_close(c.deletion[:, -1], dropped)
        torch.testing.assert_close(c.insertion[:, 0], dropped)
        torch.testing.assert_close(c.insertion[:, -1], probs)
        assert c.deletion.shape == (2, 5)


def test_method_agreement_is_one_for_identical_and_minus_one_for_reversed_rankings():
    model = product(da=5, db=4)
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    results = {"x": {"a": scores}, "same": {"a": -2 * scores},
               "reversed": {"a": 6 - scores}}
    agreement = method_agreement(model, results, modality="a", k=2)
    torch.testing.assert_close(agreement.spearman[0],
                               torch.tensor([[1.0, 1, -1], [1, 1, -1], [-1, -1, 1]]))
    torch.testing.assert_close(agreement.top_k_overlap[0],
                               torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]]))
    assert agreement.methods == ["x", "same", "reversed"]


def test_integrated_gradients_and_input_x_gradient_rank_a_product_model_alike():
    model = product(da=5, db=4)
    inputs = model.spec.example_inputs(3, seed=7)
    results = {m: attribute(model, inputs, target=0, method=m)
               for m in ("integrated_gradients", "input_x_gradient", "saliency")}
    agreement = method_agreement(model, results, modality="a", k=2)
    torch.testing.assert_close(agreement.spearman[:, 0, 1], torch.ones(3))
    assert agreement.spearman.shape == (3, 3, 3)
    with pytest.raises(ValueError, match="two methods"):
        method_agreement(model, {"ig": results["saliency"]}, modality="a")
