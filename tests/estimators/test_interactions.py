"""Cross-modal Hessians, heatmaps and Integrated Hessians against exact answers and slow
autograd references."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from estimators.attribution import feature_baselines
from estimators.interactions import (
    block_to_elements,
    cross_hessian,
    integrated_hessians,
    interaction_heatmap,
    log_weight_gauss,
    top_pairs,
)
from tests.fixtures.models import additive, bilinear, cnn_text, mlp, product, three_modal

finite = st.floats(-2, 2, width=32)


def test_additive_model_has_exactly_zero_cross_hessian_heatmap_and_integrated_hessians():
    model = additive()
    inputs = model.spec.example_inputs(3)
    assert cross_hessian(model, inputs, "a", "b", target=1).abs().max() < 1e-6
    assert interaction_heatmap(model, inputs, "a", "b", target=0).matrix.abs().max() < 1e-6
    ih = integrated_hessians(model, inputs, "a", "b", target=2)
    assert ih.interactions.abs().max() < 1e-6


def test_bilinear_block_is_the_class_weight_matrix_for_each_row_target():
    model = bilinear()
    inputs = model.spec.example_inputs(3)
    target = torch.tensor([2, 0, 1])
    block = cross_hessian(model, inputs, "a", "b", target=target)
    torch.testing.assert_close(block, model.module.W.detach()[target])
    flipped = cross_hessian(model, inputs, "b", "a", target=target)
    torch.testing.assert_close(flipped, model.module.W.detach()[target].transpose(1, 2))


def test_product_block_is_the_outer_product_of_the_weights():
    model = product()
    inputs = model.spec.example_inputs(2)
    w, v = model.module.w.detach(), model.module.v.detach()
    torch.testing.assert_close(cross_hessian(model, inputs, "a", "b", target=0),
                               torch.outer(w, v).expand(2, 5, 4))
    torch.testing.assert_close(cross_hessian(model, inputs, "a", "b", target=1, output="logits"),
                               -torch.outer(w, v).expand(2, 5, 4))


def _slow_hessian(model, inputs, target: int, output: str = "logits") -> torch.Tensor:
    """Reference: torch.autograd.functional.hessian on the concatenated feature vector."""
    features = model.embed(inputs)
    names = model.spec.names
    shapes = [features[n].shape[1:] for n in names]
    sizes = [int(np.prod(s)) for s in shapes]

    def f(flat: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, (p.reshape(1, *s) for p, s in
                                 zip(flat.split(sizes), shapes, strict=True)), strict=True))
        raw = {n: inputs[n] if n in model.token_names else parts[n] for n in names}
        out = model.forward_embedded(raw, parts)
        out = torch.log_softmax(out, -1) if output == "log_softmax" else out
        return out[0, target]

    flat = torch.cat([features[n][0].reshape(-1) for n in names])
    return torch.autograd.functional.hessian(f, flat), sizes, shapes


@pytest.mark.parametrize("factory", [mlp, cnn_text])
def test_blocks_agree_with_autograd_functional_hessian(factory):
    model = factory()
    inputs = model.spec.example_inputs(1, seed=3)
    full, sizes, shapes = _slow_hessian(model, inputs, target=1, output="log_softmax")
    names = model.spec.names
    offsets = np.cumsum([0, *sizes])
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            ref = full[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]]
            ours = cross_hessian(model, inputs, a, b, target=1, output="log_softmax")
            torch.testing.assert_close(ours[0], ref.reshape(*shapes[i], *shapes[j]),
                                       atol=1e-5, rtol=1e-4)


@given(hnp.arrays(np.float32, (2, 5), elements=finite),
       hnp.arrays(np.float32, (2, 4), elements=finite))
def test_hessian_is_symmetric_across_and_within_modalities(a, b):
    model = mlp()
    inputs = {"a": torch.from_numpy(a), "b": torch.from_numpy(b)}
    ab = cross_hessian(model, inputs, "a", "b", target=2)
    ba = cross_hessian(model, inputs, "b", "a", target=2)
    torch.testing.assert_close(ab, ba.transpose(1, 2), atol=1e-6, rtol=1e-5)
    aa = cross_hessian(model, inputs, "a", "a", target=2)
    torch.testing.assert_close(aa, aa.transpose(1, 2), atol=1e-6, rtol=1e-5)


def test_chunked_directions_give_the_same_block():
    model = cnn_text()
    inputs = model.spec.example_inputs(2)
    whole = cross_hessian(model, inputs, "image", "text", target=0)
    chunked = cross_hessian(model, inputs, "image", "text", target=0, chunk_size=7)
    torch.testing.assert_close(whole, chunked)
    assert whole.shape == (2, 1, 8, 8, 6, 8)


@pytest.mark.parametrize("weight", ["ones", "input"])
@pytest.mark.parametrize(("a", "b"), [("image", "text"), ("text", "image")])
def test_hvp_heatmap_equals_the_reduced_full_block(weight, a, b):
    model = cnn_text()
    inputs = model.spec.example_inputs(2, seed=5)
    hm = interaction_heatmap(model, inputs, a, b, target=1, weight=weight, size_a=2, size_b=2)
    block = cross_hessian(model, inputs, a, b, target=1)
    if weight == "input":
        feats = model.embed(inputs)
        fa, fb = feats[a], feats[b]
        block = block * fa.reshape(*fa.shape, *[1] * (fb.ndim - 1)) * fb.reshape(
            fb.shape[0], *[1] * (fa.ndim - 1), *fb.shape[1:])
    ref = block_to_elements(block, hm.layout_a, hm.layout_b)
    torch.testing.assert_close(hm.matrix, ref, atol=1e-6, rtol=1e-4)
    expected_a = (16,) if a == "image" else (6,)
    assert hm.matrix.shape == (2, *expected_a, 22 - expected_a[0])


def test_heatmap_works_for_every_pair_of_three_modalities():
    model = three_modal()
    inputs = model.spec.example_inputs(2)
    sizes = {"vitals": 4, "ecg": 12, "text": 5}
    for a in sizes:
        for b in sizes:
            if a != b:
                hm = interaction_heatmap(model, inputs, a, b, target=0)
                assert hm.matrix.shape == (2, sizes[a], sizes[b])
                assert hm.matrix.abs().max() > 0


def test_abs_sum_reduction_bounds_the_signed_sum():
    model = cnn_text()
    inputs = model.spec.example_inputs(1)
    hm = interaction_heatmap(model, inputs, "image", "text", target=0, weight="ones")
    block = cross_hessian(model, inputs, "image", "text", target=0)
    absolute = block_to_elements(block, hm.layout_a, hm.layout_b, reduce="abs_sum")
    assert (absolute + 1e-7 >= hm.matrix.abs()).all()


def test_top_pairs_are_the_largest_absolute_entries_strongest_first():
    matrix = torch.tensor([[0.1, -3.0, 0.0], [2.0, 0.5, -0.2]])
    assert top_pairs(matrix, 2) == [(0, 1, -3.0), (1, 0, 2.0)]
    batched = top_pairs(torch.stack([matrix, -matrix]), 1)
    assert batched == [[(0, 1, -3.0)], [(0, 1, 3.0)]]
    assert len(top_pairs(matrix, 100)) == 6


def test_log_weight_gauss_rule_integrates_polynomials_exactly():
    nodes, weights = log_weight_gauss(8)
    for n in range(16):
        approx = sum(w * t**n for t, w in zip(nodes, weights, strict=True))
        assert abs(approx - 1 / (n + 1) ** 2) < 1e-12
    assert all(0 < t < 1 for t in nodes)


def test_integrated_hessians_of_bilinear_model_are_a_quarter_of_weight_times_inputs():
    model = bilinear()
    inputs = model.spec.example_inputs(2)
    result = integrated_hessians(model, inputs, "a", "b", target=1)
    expected = 0.25 * inputs["a"][:, :, None] * model.module.W.detach()[1] * inputs["b"][:, None]
    torch.testing.assert_close(result.interactions, expected)


@pytest.mark.parametrize("factory", [mlp, cnn_text])
def test_integrated_hessians_over_all_pairs_sum_to_the_output_change(factory):
    model = factory()
    inputs = model.spec.example_inputs(2, seed=4)
    baselines = "pad" if factory is cnn_text else "zeros"
    names = model.spec.names
    total = torch.zeros(2)
    for a in names:
        for b in names:
            gamma = integrated_hessians(model, inputs, a, b, target=1, baselines=baselines,
                                        internal_batch_size=8)
            total += gamma.interactions.flatten(1).sum(1)
    features = model.embed(inputs)
    base = feature_baselines(model, inputs, features, baselines)
    raw = {n: inputs[n] if n in model.token_names else base[n] for n in names}
    change = (model(inputs) - model.forward_embedded(raw, base))[:, 1].detach()
    torch.testing.assert_close(total, change + gamma.delta, atol=2e-5, rtol=1e-4)
    assert gamma.delta.abs().max() < 1e-4
    torch.testing.assert_close(total, change, atol=1e-4, rtol=1e-4)


def test_unknown_modality_and_bad_target_are_refused():
    model = mlp()
    inputs = model.spec.example_inputs(2)
    with pytest.raises(ValueError, match="no modality 'c'"):
        cross_hessian(model, inputs, "a", "c", target=0)
    with pytest.raises(ValueError, match="target"):
        cross_hessian(model, inputs, "a", "b", target=torch.tensor([0, 1, 2]))


def test_within_modality_heatmap_is_the_reduced_symmetric_hessian():
    model = cnn_text()
    inputs = model.spec.example_inputs(2, seed=6)
    hm = interaction_heatmap(model, inputs, "text", "text", target=2, weight="ones")
    block = cross_hessian(model, inputs, "text", "text", target=2)
    torch.testing.assert_close(hm.matrix, block_to_elements(block, hm.layout_a, hm.layout_b),
                               atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(hm.matrix, hm.matrix.transpose(1, 2), atol=1e-6, rtol=1e-4)
