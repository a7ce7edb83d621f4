"""Per-modality attributions: parity with Captum called directly, completeness, baselines."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerIntegratedGradients, Saliency
from hypothesis import given
from hypothesis import strategies as st

from estimators.attribution import (
    attribute,
    element_layout,
    feature_baselines,
    feature_means,
    to_elements,
)
from estimators.model import ModalitySpec
from tests.fixtures.models import cnn_text, mlp, three_modal

finite = st.floats(-2, 2, width=32)


@pytest.fixture(scope="module")
def cnn() -> tuple:
    model = cnn_text()
    return model, model.spec.example_inputs(3, seed=1)


@pytest.mark.parametrize(("method", "captum_cls"), [
    ("integrated_gradients", IntegratedGradients), ("saliency", Saliency),
    ("input_x_gradient", InputXGradient)])
def test_wrapper_equals_captum_called_directly_on_continuous_modalities(method, captum_cls):
    model = mlp()
    inputs = model.spec.example_inputs(4, seed=2)
    target = torch.tensor([0, 1, 2, 1])
    ours = attribute(model, inputs, target=target, method=method, n_steps=20)
    direct = captum_cls(lambda a, b: model.module(a, b))
    kwargs = {"n_steps": 20} if method == "integrated_gradients" else {}
    ref = direct.attribute((inputs["a"].clone().requires_grad_(),
                            inputs["b"].clone().requires_grad_()), target=target, **kwargs)
    torch.testing.assert_close(ours.attributions["a"], ref[0].detach())
    torch.testing.assert_close(ours.attributions["b"], ref[1].detach())
    assert (ours.delta is None) == (method != "integrated_gradients")


def test_token_attributions_equal_captum_layer_integrated_gradients_at_the_embedding(cnn):
    model, inputs = cnn
    ours = attribute(model, inputs, target=2, baselines={"image": inputs["image"], "text": "pad"},
                     n_steps=24)
    layer_ig = LayerIntegratedGradients(lambda ids, image: model.module(image, ids),
                                        model.module.text_encoder.embed)
    ref = layer_ig.attribute(inputs["text"], baselines=torch.zeros_like(inputs["text"]),
                             additional_forward_args=(inputs["image"],), target=2, n_steps=24)
    torch.testing.assert_close(ours.attributions["text"], ref.detach(), rtol=1e-4, atol=1e-6)
    assert ours.attributions["image"].abs().max() == 0


def test_image_attributions_equal_captum_ig_with_text_held_at_its_embedding(cnn):
    model, inputs = cnn
    own_text = model.embed(inputs)["text"]
    ours = attribute(model, inputs, target=0, baselines={"text": own_text}, n_steps=24)
    ref = IntegratedGradients(lambda image, ids: model.module(image, ids)).attribute(
        inputs["image"], additional_forward_args=(inputs["text"],), target=0, n_steps=24)
    torch.testing.assert_close(ours.attributions["image"], ref, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_totals_add_up_to_the_output_change_for_every_modality(cnn):
    model, inputs = cnn
    result = attribute(model, inputs, target=torch.tensor([0, 1, 2]), baselines="pad",
                       internal_batch_size=32)
    features = model.embed(inputs)
    base = feature_baselines(model, inputs, features, "pad")
    raw = {"image": base["image"], "text": inputs["text"]}
    change = (model(inputs) - model.forward_embedded(raw, base)).gather(
        1, torch.tensor([[0], [1], [2]])).squeeze(1)
    total = result.totals["image"] + result.totals["text"]
    torch.testing.assert_close(total, change.detach(), atol=1e-4, rtol=1e-4)
    assert result.delta.abs().max() < 1e-4
    assert set(result.attributions) == {"image", "text"}
    assert result.attributions["text"].shape == (3, 6, 8)


@given(hnp.arrays(np.float32, (2, 5), elements=finite),
       hnp.arrays(np.float32, (2, 4), elements=finite))
def test_integrated_gradients_completeness_holds_on_any_input(a, b):
    model = mlp()
    inputs = {"a": torch.from_numpy(a), "b": torch.from_numpy(b)}
    result = attribute(model, inputs, target=1, n_steps=32)
    change = model(inputs)[:, 1] - model({"a": 0 * inputs["a"], "b": 0 * inputs["b"]})[:, 1]
    torch.testing.assert_close(result.totals["a"] + result.totals["b"], change.detach(),
                               atol=2e-4, rtol=1e-3)


def test_int_target_and_per_row_tensor_target_agree():
    model = three_modal()
    inputs = model.spec.example_inputs(3)
    by_int = attribute(model, inputs, target=1, method="input_x_gradient")
    by_tensor = attribute(model, inputs, target=torch.tensor([1, 1, 1]), method="input_x_gradient")
    for name in model.spec.names:
        torch.testing.assert_close(by_int.attributions[name], by_tensor.attributions[name])


def test_pad_and_mask_baselines_are_the_embeddings_of_all_pad_and_all_mask_tokens(cnn):
    model, inputs = cnn
    features = model.embed(inputs)
    embed = model.module.text_encoder.embed
    for kind, token in (("pad", 0), ("mask", 1)):
        base = feature_baselines(model, inputs, features, kind)
        torch.testing.assert_close(base["text"],
                                   embed(torch.full_like(inputs["text"], token)).detach())
        assert base["image"].abs().max() == 0


def test_blur_baseline_smooths_the_image_and_keeps_its_mean(cnn):
    model, inputs = cnn
    features = model.embed(inputs)
    blurred = feature_baselines(model, inputs, features, "blur")["image"]
    original = features["image"]
    assert blurred.shape == original.shape
    assert blurred.diff(dim=-1).abs().mean() < 0.5 * original.diff(dim=-1).abs().mean()
    torch.testing.assert_close(blurred.mean(), original.mean(), atol=0.1, rtol=0)


def test_mean_baseline_uses_feature_means_and_says_how_to_get_them(cnn):
    model, inputs = cnn
    features = model.embed(inputs)
    with pytest.raises(ValueError, match="feature_means"):
        feature_baselines(model, inputs, features, "mean")
    means = feature_means(model, inputs, batch_size=2)
    torch.testing.assert_close(means["text"], features["text"].mean(0))
    base = feature_baselines(model, inputs, features, "mean", means=means)
    torch.testing.assert_close(base["image"], features["image"].mean(0).expand(3, 1, 8, 8))


def test_bad_baselines_and_methods_are_refused_with_a_clear_message(cnn):
    model, inputs = cnn
    features = model.embed(inputs)
    with pytest.raises(ValueError, match="shape"):
        feature_baselines(model, inputs, features, {"image": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="not one of"):
        feature_baselines(model, inputs, features, "noise")
    with pytest.raises(ValueError, match="method must be"):
        attribute(model, inputs, target=0, method="lime")


def test_elements_are_patches_tokens_windows_and_features():
    image = element_layout(ModalitySpec(name="x", kind="image", shape=(3, 8, 8)), (3, 8, 8),
                           size=4)
    assert image.grid == (2, 2) and image.size == 4
    x = torch.zeros(1, 3, 8, 8)
    x[0, :, 5, 1] = 1.0  # bottom-left patch
    assert to_elements(x, image).tolist() == [[0.0, 0.0, 3.0, 0.0]]
    token = element_layout(ModalitySpec(name="t", kind="text", shape=(4,), dtype="int64",
                                        embedding="e"), (4, 3))
    assert token.grid == (4,)
    assert to_elements(torch.ones(2, 4, 3), token).tolist() == [[3.0] * 4] * 2
    series = element_layout(ModalitySpec(name="s", kind="timeseries", shape=(2, 10)), (2, 10),
                            size=4)
    assert series.grid == (3,)
    assert to_elements(torch.ones(2, 10), series).tolist() == [8.0, 8.0, 4.0]
    table = element_layout(ModalitySpec(name="v", kind="tabular", shape=(5,)), (5,))
    assert table.grid == (5,)
