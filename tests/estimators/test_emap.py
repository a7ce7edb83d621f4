"""EMAP against brute-force N×N evaluation, exact answers on additive and bilinear models."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from estimators.data import MultimodalDataset
from estimators.emap import Encoders, emap_gap, emap_logits
from estimators.model import ModalitySpec, ModelSpec, MultimodalModel
from tests.fixtures.models import additive, bilinear, cnn_text, mlp, three_modal, two_stage


def _brute_force(model: MultimodalModel, inputs: dict[str, Tensor]) -> Tensor:
    """Every combination for each modality held at instance i, others at instance j."""
    names = model.spec.names
    n = next(iter(inputs.values())).shape[0]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    with torch.no_grad():
        per_modality = [model({k: v[i] if k == own else v[j] for k, v in inputs.items()})
                        .reshape(n, n, -1) for own in names]
    mu = torch.stack([p.mean((0, 1)) for p in per_modality]).mean(0)
    return sum(p.mean(1) for p in per_modality) - (len(names) - 1) * mu


def test_emap_of_an_additive_model_is_the_model():
    model = additive()
    inputs = model.spec.example_inputs(9)
    torch.testing.assert_close(emap_logits(model, inputs, batch_size=10),
                               model(inputs).detach(), atol=1e-5, rtol=1e-5)


class _Additive3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.f = nn.ModuleDict({n: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
                                for n in ("x", "y", "z")})

    def forward(self, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
        return self.f["x"](x) + self.f["y"](y) + self.f["z"](z)


def test_emap_of_an_additive_three_modality_model_is_the_model():
    spec = ModelSpec(modalities=[ModalitySpec(name=n, kind="tabular", shape=(3,))
                                 for n in ("x", "y", "z")], classes=["p", "q"])
    model = MultimodalModel(_Additive3(), spec)
    inputs = spec.example_inputs(7)
    torch.testing.assert_close(emap_logits(model, inputs), model(inputs).detach(),
                               atol=1e-5, rtol=1e-5)


def test_emap_of_a_bilinear_model_replaces_the_product_by_its_mean_field_terms():
    model = bilinear()
    inputs = model.spec.example_inputs(6)
    a, b, w = inputs["a"], inputs["b"], model.module.W.detach()
    a_bar, b_bar = a.mean(0), b.mean(0)
    # mean_{j,k} a_jᵀ W b_k = āᵀ W b̄ for a bilinear form
    expected = (torch.einsum("ni,cij,j->nc", a, w, b_bar)
                + torch.einsum("i,cij,nj->nc", a_bar, w, b)
                - torch.einsum("i,cij,j->c", a_bar, w, b_bar))
    torch.testing.assert_close(emap_logits(model, inputs, batch_size=5), expected,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("factory", [mlp, cnn_text, three_modal])
@pytest.mark.parametrize("batch_size", [7, 25, 4096])
def test_chunked_emap_equals_brute_force_for_any_chunk_size(factory, batch_size):
    model = factory()
    inputs = model.spec.example_inputs(11, seed=2)
    torch.testing.assert_close(emap_logits(model, inputs, batch_size=batch_size),
                               _brute_force(model, inputs), atol=1e-5, rtol=1e-5)


def test_encoder_cache_path_gives_the_same_logits_as_the_full_model():
    model = two_stage()
    inputs = model.spec.example_inputs(13)
    encoders = Encoders.of(model)
    assert encoders is not None
    torch.testing.assert_close(emap_logits(model, inputs, batch_size=16, encoders=encoders),
                               emap_logits(model, inputs, batch_size=16), atol=1e-6, rtol=1e-5)
    assert Encoders.of(mlp()) is None


def test_emap_gap_is_zero_for_additive_and_reported_for_interacting_models():
    model = additive()
    inputs = model.spec.example_inputs(20)
    labels = model(inputs).argmax(-1)
    gap = emap_gap(model, MultimodalDataset(inputs, labels), batch_size=64)
    assert gap.gap == 0 and gap.agreement == 1 and gap.score == 1 and gap.metric == "accuracy"
    interacting = bilinear()
    data = MultimodalDataset(inputs, interacting(inputs).argmax(-1))
    result = emap_gap(interacting, data, batch_size=64)
    assert result.score == 1 and result.gap > 0 and result.agreement < 1


class _FirstTwo(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x[:, :2]


def test_emap_refuses_one_modality_and_non_positive_batches():
    spec = ModelSpec(modalities=[ModalitySpec(name="x", kind="tabular", shape=(3,))],
                     classes=["p", "q"])
    single = MultimodalModel(_FirstTwo(), spec)
    with pytest.raises(ValueError, match="two modalities"):
        emap_logits(single, spec.example_inputs(3))
    model = mlp()
    with pytest.raises(ValueError, match="batch_size"):
        emap_logits(model, model.spec.example_inputs(3), batch_size=0)
