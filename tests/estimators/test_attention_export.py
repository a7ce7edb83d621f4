"""Attention capture from ``torch.export`` programs saved as ``.pt2`` and loaded back.

Each test loads only a ``.pt2`` file this module just exported (loading unpickles; in
production that happens only inside the sandbox host). The eager capture these are compared
with is itself pinned to hand computations in ``test_attention.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from estimators.attention import (
    capture_attention,
    sdpa_weights,
    trace_attention,
    trace_exported_attention,
)
from estimators.model import MultimodalModel
from tests.fixtures.attention_models import export_pt2, padded_inputs, sdpa_transformer

VARIANTS = {   # name: (sdpa_transformer options, run_decompositions before saving)
    "fused-sdpa-gqa": ({"n_kv_heads": 2}, False),
    "explicit-softmax": ({"fused": False}, False),
}


class AveragedMHA(nn.Module):
    """MultiheadAttention asked for (averaged) weights: the exported graph keeps the weights
    as one ``[B*heads, N, N]`` softmax; the model's own output softmax is not attention."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        out, averaged = self.attn(tokens, tokens, tokens)
        return out.mean(1).softmax(-1), averaged


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Each variant exported, saved as ``.pt2`` and loaded back: (model, inputs, program)."""
    directory = tmp_path_factory.mktemp("pt2")
    made = {}
    for name, (options, decompose) in VARIANTS.items():
        model = sdpa_transformer(**options)
        inputs = padded_inputs(model)
        path = export_pt2(model.module, inputs, directory, decompose=decompose,
                          name=f"{name}.pt2")
        made[name] = (model, inputs, torch.export.load(path))
    return made


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exported_program_attention_equals_eager_capture(exported: dict, variant: str) -> None:
    model, inputs, program = exported[variant]
    trace = trace_exported_attention(program, inputs)
    assert trace.names == ["blocks.0.attn", "blocks.1.attn"]
    torch.testing.assert_close(trace.output, model(inputs).detach())
    for mine, eager in zip(trace.attentions, capture_attention(model, inputs), strict=True):
        assert mine.shape == (3, 4, 11, 11)
        torch.testing.assert_close(mine, eager)
        torch.testing.assert_close(mine.sum(-1), torch.ones(mine.shape[:-1]))
        assert mine[1, :, :, -1].abs().max() == 0   # row 1 pads its last text token


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_unflattened_program_wrapped_as_model_gives_the_same_capture(exported: dict,
                                                                     variant: str) -> None:
    """How the sandbox host runs a ``.pt2``: unflattened and wrapped as a MultimodalModel."""
    model, inputs, program = exported[variant]
    hosted = MultimodalModel(torch.export.unflatten(program), model.spec)
    trace = trace_attention(hosted, inputs)
    assert trace.names == ["blocks.0.attn", "blocks.1.attn"]
    for mine, eager in zip(trace.attentions, capture_attention(model, inputs), strict=True):
        torch.testing.assert_close(mine, eager)


def test_exported_selection_keeps_chosen_layers_and_heads(exported: dict) -> None:
    _model, inputs, program = exported["fused-sdpa-gqa"]
    full = trace_exported_attention(program, inputs)
    kept = trace_exported_attention(program, inputs, layers=[-1], heads=[0],
                                    dtype=torch.float16)
    assert kept.layers == [1] and kept.n_layers == 2
    torch.testing.assert_close(kept.attentions[0].float(), full.attentions[1][:, :1],
                               atol=1e-3, rtol=1e-3)


def test_exported_multihead_weights_split_per_head_and_skip_non_attention_softmax(
        tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = AveragedMHA().eval()
    tokens = torch.randn(3, 5, 8)
    path = export_pt2(module, {"tokens": tokens}, tmp_path)
    trace = trace_exported_attention(torch.export.load(path), {"tokens": tokens})
    assert trace.names == ["attn"] and trace.attentions[0].shape == (3, 2, 5, 5)
    torch.testing.assert_close(trace.attentions[0], capture_attention(module, (tokens,))[0])
    torch.testing.assert_close(trace.attentions[0].mean(1), trace.output[1])


def test_exported_huggingface_bert_softmax_nodes_equal_its_output_attentions() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=16, attn_implementation="eager")
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, -3:] = 0
    inputs = {"input_ids": torch.randint(0, 50, (2, 9)), "attention_mask": mask}
    with torch.no_grad():
        reference = bert(**inputs, output_attentions=True)
    trace = trace_exported_attention(torch.export.export(bert, (), kwargs=inputs), inputs)
    assert trace.names == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    for mine, theirs in zip(trace.attentions, reference.attentions, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    torch.testing.assert_close(trace.output.pooler_output, reference.pooler_output)


class Mixer(nn.Module):
    """Calls SDPA from a module whose name does not say attention."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def test_decomposed_sdpa_softmax_is_recognised_by_its_origin(tmp_path: Path) -> None:
    q, k, v = torch.randn(3, 2, 4, 5, 4).unbind(0)
    path = export_pt2(Mixer(), {"q": q, "k": k, "v": v}, tmp_path, decompose=True)
    program = torch.export.load(path)
    assert not any("scaled_dot_product" in str(n.target) for n in program.graph.nodes)
    trace = trace_exported_attention(program, {"q": q, "k": k, "v": v})
    assert len(trace.attentions) == 1
    torch.testing.assert_close(trace.attentions[0], sdpa_weights(q, k, is_causal=True))


def test_exported_inputs_that_do_not_match_the_signature_get_a_clear_error(
        exported: dict) -> None:
    _model, inputs, program = exported["explicit-softmax"]
    with pytest.raises(ValueError, match="do not match the exported program's signature"):
        trace_exported_attention(program, {"image": inputs["image"]})
