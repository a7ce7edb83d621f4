"""Attention capture from eager models: weights equal hand computations, nothing leaks."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from estimators.attention import capture_attention, sdpa_weights, trace_attention
from tests.fixtures.attention_models import (
    SelfAttention,
    mha_transformer,
    padded_inputs,
    sdpa_transformer,
)


def _inputs_to(model: nn.Module, kind: type[nn.Module]) -> tuple[list[Tensor], list]:
    """The first positional input of every ``kind`` submodule, in call order."""
    seen: list[Tensor] = []
    handles = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
               for m in model.modules() if isinstance(m, kind)]
    return seen, handles


def _hand_softmax(q: Tensor, k: Tensor, padding: Tensor) -> Tensor:
    """softmax(q kᵀ / sqrt(d)) over non-padding keys; q, k [B, H, N, d], padding [B, N]."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(padding[:, None, None, :], float("-inf")), dim=-1)


def _heads(x: Tensor, n_heads: int) -> Tensor:
    return x.reshape(x.shape[0], x.shape[1], n_heads, -1).transpose(1, 2)


def test_multihead_attention_gives_per_head_weights_equal_to_hand_computation() -> None:
    model = mha_transformer()
    inputs = padded_inputs(model)
    padding = model.module.embed(**inputs)[1]
    seen, handles = _inputs_to(model, nn.MultiheadAttention)
    try:
        captured = capture_attention(model, inputs)
    finally:
        for h in handles:
            h.remove()
    layers = model.module.encoder.layers
    assert len(captured) == len(layers) == len(seen)
    for x, mha, weights in zip(seen, (layer.self_attn for layer in layers), captured,
                               strict=True):
        w_q, w_k, _ = mha.in_proj_weight.chunk(3)
        b_q, b_k, _ = mha.in_proj_bias.chunk(3)
        q = _heads(x @ w_q.T + b_q, mha.num_heads)
        k = _heads(x @ w_k.T + b_k, mha.num_heads)
        assert weights.shape == (3, mha.num_heads, 11, 11)
        torch.testing.assert_close(weights, _hand_softmax(q, k, padding).detach())


@pytest.mark.parametrize("options", [{}, {"n_kv_heads": 2}, {"fused": False}],
                         ids=["sdpa", "sdpa-gqa", "explicit-softmax"])
def test_sdpa_and_explicit_softmax_weights_equal_hand_computation(options: dict) -> None:
    model = sdpa_transformer(**options)
    inputs = padded_inputs(model)
    padding = model.module.embed(**inputs)[1]
    seen, handles = _inputs_to(model, SelfAttention)
    try:
        trace = trace_attention(model, inputs)
    finally:
        for h in handles:
            h.remove()
    assert trace.names == ["blocks.0.attn", "blocks.1.attn"]
    for x, attn, weights in zip(seen, (b.attn for b in model.module.blocks), trace.attentions,
                                strict=True):
        q = _heads(attn.q(x), attn.n_heads)
        k = _heads(attn.k(x), attn.n_kv_heads).repeat_interleave(
            attn.n_heads // attn.n_kv_heads, dim=1)
        torch.testing.assert_close(weights, _hand_softmax(q, k, padding).detach())
        assert weights[2, :, :, -2:].abs().max() == 0  # the two padding keys of row 2


@pytest.mark.parametrize("make", [mha_transformer, sdpa_transformer], ids=["mha", "sdpa"])
def test_capture_leaves_output_unchanged_and_removes_every_hook(make) -> None:
    model = make()
    inputs = padded_inputs(model)
    plain = model(inputs).detach()
    trace = trace_attention(model, inputs)
    torch.testing.assert_close(trace.output, plain, rtol=0, atol=1e-6)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch._C._len_torch_function_stack() == 0
    for weights in trace.attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def test_multihead_attention_caller_still_gets_what_it_asked_for() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    query, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)

    class Caller(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, query: Tensor, memory: Tensor) -> dict[str, Tensor | None]:
            return {"averaged": self.mha(query, memory, memory)[1],
                    "none": self.mha(query, memory, memory, need_weights=False)[1]}

    expected = mha(query, memory, memory)[1]
    trace = trace_attention(Caller(), {"query": query, "memory": memory})
    assert trace.output["none"] is None
    torch.testing.assert_close(trace.output["averaged"], expected)
    assert [tuple(w.shape) for w in trace.attentions] == [(2, 2, 3, 5)] * 2  # cross-attention
    torch.testing.assert_close(trace.attentions[0].mean(1), expected)


def test_a_concurrent_plain_forward_in_another_thread_is_neither_recorded_nor_changed() -> None:
    model = mha_transformer()
    inputs = padded_inputs(model)
    expected = model(inputs).detach()
    inside, release = threading.Event(), threading.Event()

    class Held(nn.Module):
        """Runs the model, then keeps the capture open until the main thread is done."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model.module

        def forward(self, **inputs: Tensor) -> Tensor:
            out = self.inner(**inputs)
            inside.set()
            release.wait(timeout=30)
            return out

    result: dict[str, list[Tensor]] = {}
    worker = threading.Thread(target=lambda: result.update(
        maps=capture_attention(Held(), inputs)))
    worker.start()
    try:
        assert inside.wait(timeout=30)
        torch.testing.assert_close(model(inputs).detach(), expected, rtol=0, atol=1e-6)
        _, weights = model.module.encoder.layers[0].self_attn(*[torch.zeros(1, 2, 16)] * 3)
        assert weights.shape == (1, 2, 2)    # averaged, as this caller asked
    finally:
        release.set()
        worker.join()
    assert len(result["maps"]) == 2


def test_everything_is_restored_when_the_forward_pass_raises() -> None:
    model = sdpa_transformer()
    inputs = padded_inputs(model)

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model.module

        def forward(self, **inputs: Tensor) -> Tensor:
            self.inner(**inputs)
            raise RuntimeError("boom after attention")

    with pytest.raises(RuntimeError, match="boom"):
        capture_attention(Broken(), inputs)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch._C._len_torch_function_stack() == 0
    assert len(capture_attention(model, inputs)) == 2


@pytest.mark.parametrize("make", [mha_transformer, sdpa_transformer], ids=["mha", "sdpa"])
def test_layer_head_selection_and_float16_storage_keep_exactly_what_was_asked(make) -> None:
    model = make(n_layers=3)
    inputs = padded_inputs(model)
    full = trace_attention(model, inputs)
    kept = trace_attention(model, inputs, layers=[-1, 0], heads=[3, 1], dtype=torch.float16)
    assert kept.layers == [0, 2] and kept.n_layers == 3
    assert kept.names == [full.names[0], full.names[2]]
    for mine, reference in zip(kept.attentions, (full.attentions[0], full.attentions[2]),
                               strict=True):
        assert mine.dtype == torch.float16
        torch.testing.assert_close(mine.float(), reference[:, [3, 1]], atol=1e-3, rtol=1e-3)
    middle = trace_attention(model, inputs, layers=[1])   # the others are not even computed
    assert middle.layers == [1] and middle.n_layers == 3
    torch.testing.assert_close(middle.attentions[0], full.attentions[1])
    torch.testing.assert_close(middle.output, full.output)
    with pytest.raises(ValueError, match=r"ran 3 attention layers.*0\.\.2"):
        capture_attention(model, inputs, layers=[3])
    with pytest.raises(ValueError, match=r"has 4 heads"):
        capture_attention(model, inputs, heads=[4])


def test_attentions_returned_by_the_model_are_used_when_no_module_runs() -> None:
    weights = torch.softmax(torch.randn(2, 3, 4, 4), dim=-1)

    class ReturnsAttentions(nn.Module):
        def forward(self, x: Tensor) -> SimpleNamespace:
            return SimpleNamespace(logits=x.sum(-1), attentions=(weights, weights * 1))

    trace = trace_attention(ReturnsAttentions(), torch.zeros(2, 5))
    assert trace.names == ["output.attentions[0]", "output.attentions[1]"]
    torch.testing.assert_close(trace.attentions[1], weights)


def test_model_without_attention_gives_an_empty_list() -> None:
    assert capture_attention(nn.Linear(3, 2), torch.zeros(4, 3)) == []


def test_huggingface_bert_eager_and_sdpa_match_its_output_attentions() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=16, attn_implementation="eager")
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    ids = torch.randint(0, 50, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, -3:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        reference = bert(**inputs, output_attentions=True).attentions
    eager = capture_attention(bert, inputs)
    bert.set_attn_implementation("sdpa")   # returns no attentions; its SDPA calls are caught
    fused = capture_attention(bert, inputs)
    assert len(eager) == len(fused) == len(reference) == 2
    for mine_eager, mine_fused, theirs in zip(eager, fused, reference, strict=True):
        torch.testing.assert_close(mine_eager, theirs)
        torch.testing.assert_close(mine_fused, theirs)


@st.composite
def _sdpa_case(draw: st.DrawFn) -> dict:
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    b, hk = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    groups = draw(st.integers(1, 2))
    n_q, n_k, d = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.sampled_from([2, 4]))
    case = {"query": torch.randn(b, hk * groups, n_q, d, generator=gen),
            "key": torch.randn(b, hk, n_k, d, generator=gen),
            "value": torch.randn(b, hk, n_k, 3, generator=gen),
            "enable_gqa": groups > 1,
            "scale": draw(st.none() | st.floats(0.1, 2.0))}
    mask = draw(st.sampled_from(["none", "bool", "float", "causal"]))
    if mask == "bool":
        keep = torch.rand(b, 1, n_q, n_k, generator=gen) > 0.4
        keep[..., 0] = True   # every query keeps a key: torch's kernel gives NaN otherwise
        case["attn_mask"] = keep
    elif mask == "float":
        case["attn_mask"] = torch.randn(n_q, n_k, generator=gen)
    elif mask == "causal" and n_q <= n_k:
        case["is_causal"] = True
    return case


@given(_sdpa_case())
def test_recomputed_sdpa_weights_reproduce_torch_output_and_respect_masks(case: dict) -> None:
    weights = sdpa_weights(case["query"], case["key"], case.get("attn_mask"),
                           case.get("is_causal", False), case["scale"], case["enable_gqa"])
    value = case["value"]
    if case["enable_gqa"]:
        value = value.repeat_interleave(case["query"].shape[1] // value.shape[1], dim=1)
    torch.testing.assert_close(weights @ value, F.scaled_dot_product_attention(**case),
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    mask = case.get("attn_mask")
    if mask is not None and mask.dtype == torch.bool:
        assert not weights.masked_select(~mask.expand_as(weights)).any()
    if case.get("is_causal"):
        assert weights.triu(diagonal=1).abs().max() == 0
