"""The interaction-type rule on constructed cases, and on models whose type is known."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from estimators.interaction_types import RULE, TYPES, classify, interaction_types
from estimators.model import ModalitySpec, ModelSpec, MultimodalModel
from tests.fixtures.models import bilinear, three_modal

NAMES = ["image", "text"]


def test_rule_labels_constructed_shapley_values():
    shapley = torch.tensor([[0.9, 0.05],    # image alone explains it
                            [0.5, 0.4],     # both push up
                            [0.6, -0.4],    # text pushes against
                            [0.0, 0.0],     # nothing moves
                            [-0.02, -1.0],  # text dominates a negative change
                            [0.55, -0.05]])  # tiny opposite share is not a conflict
    result = classify(shapley, torch.zeros(6), NAMES)
    assert result.types == ["dominance", "complement", "conflict", "none", "dominance",
                            "dominance"]
    assert result.dominant == ["image", None, None, None, "text", "image"]
    torch.testing.assert_close(result.shares[1], torch.tensor([5 / 9, 4 / 9]))
    assert result.counts() == {"dominance": 3, "complement": 1, "conflict": 1, "none": 1}


def test_thresholds_move_the_boundaries():
    shapley = torch.tensor([[0.7, 0.3], [0.6, -0.08]])
    assert classify(shapley, torch.zeros(2), NAMES).types == ["complement", "dominance"]
    assert classify(shapley, torch.zeros(2), NAMES, dominance=0.9).types == [
        "complement", "conflict"]
    assert classify(shapley, torch.zeros(2), NAMES, dominance=0.65).types == [
        "dominance", "dominance"]
    with pytest.raises(ValueError, match="dominance"):
        classify(shapley, torch.zeros(2), NAMES, dominance=0.3)


def test_synergy_flag_compares_the_interaction_term_with_the_total_change():
    shapley = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]])
    interaction = torch.tensor([0.6, 0.2, 0.0])
    assert classify(shapley, interaction, NAMES).synergistic.tolist() == [True, False, False]


def test_rule_text_states_the_thresholds_for_the_ui():
    result = classify(torch.tensor([[1.0, 0.0]]), torch.zeros(1), NAMES, dominance=0.9)
    assert "90%" in result.rule and "10%" in result.rule and "50%" in result.rule
    assert RULE and set(TYPES) == {"dominance", "complement", "conflict", "none"}


class _Weighted(nn.Module):
    """f = wa·Σa + wb·Σb with per-instance weights chosen by the test."""

    def __init__(self, wa: float, wb: float) -> None:
        super().__init__()
        self.wa, self.wb = wa, wb

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        out = self.wa * a.sum(-1) + self.wb * b.sum(-1)
        return torch.stack([out, -out], -1)


def _model(wa: float, wb: float) -> MultimodalModel:
    spec = ModelSpec(modalities=[ModalitySpec(name=n, kind="tabular", shape=(2,))
                                 for n in ("a", "b")], classes=["y", "n"])
    return MultimodalModel(_Weighted(wa, wb), spec)


@pytest.mark.parametrize(("wa", "wb", "expected", "dominant"), [
    (10.0, 0.5, "dominance", "a"), (1.0, 1.0, "complement", None),
    (1.0, -0.8, "conflict", None)])
def test_additive_models_get_the_type_their_weights_imply(wa, wb, expected, dominant):
    inputs = {"a": torch.ones(2, 2), "b": torch.ones(2, 2)}
    result = interaction_types(_model(wa, wb), inputs, target=0)
    assert result.types == [expected] * 2 and result.dominant == [dominant] * 2
    assert not result.synergistic.any()
    assert result.interaction.abs().max() < 1e-6


def test_bilinear_model_is_complementary_and_fully_synergistic():
    model = bilinear()
    inputs = model.spec.example_inputs(4)
    result = interaction_types(model, inputs, target=torch.tensor([0, 1, 2, 0]))
    assert result.types == ["complement"] * 4  # the product is shared evenly
    assert result.synergistic.all()  # no unimodal effect at all


def test_works_for_three_modalities():
    model = three_modal()
    result = interaction_types(model, model.spec.example_inputs(5), target=1,
                               output="softmax", baselines="mask")
    assert result.shapley.shape == (5, 3) and len(result.types) == 5
    assert set(result.types) <= set(TYPES)
