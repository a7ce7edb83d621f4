"""Attention views: rollout, head summaries, cross-modal share, query grids, API payload."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from estimators.attention import (
    attention_response,
    capture_attention,
    cross_modal_share,
    explain_attention,
    head_summary,
    padding_positions,
    position_labels,
    query_grid,
    rollout,
    validate_token_layout,
)
from estimators.model import TokenSegment
from tests.fixtures.attention_models import padded_inputs, sdpa_transformer

# [CLS] | 4 image patches on a 2×2 grid | 3 text tokens  → N = 8
LAYOUT = [TokenSegment(modality=None, role="cls", start=0, length=1),
          TokenSegment(modality="image", role="patches", start=1, length=4, grid=(2, 2)),
          TokenSegment(modality="text", role="tokens", start=5, length=3)]
CLS, IMAGE, TEXT = [0], [1, 2, 3, 4], [5, 6, 7]


def _hand_made_pattern() -> Tensor:
    """[1, 2 heads, 8, 8]. Head 0: [CLS] → itself, image patches → themselves, text → the
    image uniformly. Head 1: every query uniform over all 8 positions."""
    a = torch.zeros(1, 2, 8, 8)
    a[0, 0, 0, 0] = 1.0
    for p in IMAGE:
        a[0, 0, p, p] = 1.0
    for t in TEXT:
        a[0, 0, t, IMAGE] = 0.25
    a[0, 1] = 1 / 8
    return a


def test_head_summary_of_a_hand_made_pattern_gives_the_expected_numbers() -> None:
    a = _hand_made_pattern()
    summary = head_summary([a, a], LAYOUT)
    expected = {  # head 0, head 1
        "text->image": (1.0, 4 / 8), "image->text": (0.0, 3 / 8),
        "to_image": (1.0, 4 / 8), "to_text": (0.0, 3 / 8),
        "within": (4 / 7, (4 * 4 / 8 + 3 * 3 / 8) / 7),
        "cross": (3 / 7, (4 * 3 / 8 + 3 * 4 / 8) / 7),
        "to_cls": (1 / 8, 1 / 8),
        "entropy": (3 * 2 / 8, 3.0),   # text rows: uniform over 4 keys = 2 bits
    }
    assert set(summary) == set(expected)
    for key, (head0, head1) in expected.items():
        assert summary[key].shape == (1, 2, 2)
        torch.testing.assert_close(summary[key][0, 1], torch.tensor([head0, head1]),
                                   msg=lambda m, key=key: f"{key}: {m}")


def test_query_mask_leaves_padding_queries_out_of_the_means() -> None:
    a = _hand_made_pattern()
    a[0, 0, 7] = 0.0
    a[0, 0, 7, 7] = 1.0            # a padding text token that attends to itself only
    valid = torch.ones(1, 8, dtype=torch.bool)
    valid[0, 7] = False
    summary = head_summary([a], LAYOUT, query_mask=valid)
    assert summary["text->image"][0, 0, 0] == 1.0
    assert summary["within"][0, 0, 0] == pytest.approx(4 / 6)


def test_cross_modal_share_is_the_head_mean_of_cross_attention() -> None:
    a = _hand_made_pattern()
    a[0, 1] = torch.eye(8)         # head 1 of layer 0: nobody looks across
    share = cross_modal_share([a, torch.eye(8).expand(1, 2, 8, 8)], LAYOUT)
    assert share.shape == (1, 2)
    torch.testing.assert_close(share[0], torch.tensor([(3 / 7 + 0) / 2, 0.0]))


def test_rollout_of_identity_attention_is_identity() -> None:
    eye = torch.eye(6).expand(2, 3, 6, 6)
    torch.testing.assert_close(rollout([eye, eye, eye]), torch.eye(6).expand(2, 6, 6))


def _attention_stacks() -> st.SearchStrategy[list[Tensor]]:
    def build(seed: int, layers: int, n: int) -> list[Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return [torch.softmax(3 * torch.randn(2, 2, n, n, generator=gen), -1)
                for _ in range(layers)]
    return st.builds(build, st.integers(0, 2**16), st.integers(1, 4), st.integers(2, 7))


@given(_attention_stacks())
def test_rollout_is_the_product_of_residual_mixed_head_means(stack: list[Tensor]) -> None:
    n = stack[0].shape[-1]
    expected = torch.eye(n).expand(2, n, n)
    for a in stack:
        mixed = 0.5 * a.mean(1) + 0.5 * torch.eye(n)
        expected = mixed @ expected
    result = rollout(stack)
    torch.testing.assert_close(result, expected)
    torch.testing.assert_close(result.sum(-1), torch.ones(2, n))
    torch.testing.assert_close(rollout(stack[:1], residual=False), stack[0].mean(1))


def test_rollout_refuses_cross_attention() -> None:
    with pytest.raises(ValueError, match="cross-attention"):
        rollout([torch.ones(1, 1, 3, 3) / 3, torch.ones(1, 1, 3, 5) / 5])


def test_query_grid_reshapes_one_query_row_over_the_patch_grid() -> None:
    a = torch.softmax(torch.randn(2, 3, 8, 8), -1)
    grid = query_grid(a, LAYOUT, 6)
    assert grid.shape == (2, 3, 2, 2)
    torch.testing.assert_close(grid[..., 1, 0], a[..., 6, 3])   # row 1, col 0 = patch 2
    with pytest.raises(ValueError, match="no segment with a grid"):
        query_grid(a, LAYOUT, 6, segment="text")


def test_validate_token_layout_names_the_segment_to_fix() -> None:
    assert [s.role for s in validate_token_layout(LAYOUT[::-1], 8)] == ["cls", "patches",
                                                                         "tokens"]
    with pytest.raises(ValueError, match=r"'tokens' \(text\) covers positions 5\.\.7.*N=7"):
        validate_token_layout(LAYOUT, 7)
    overlapping = [{"modality": "image", "role": "patches", "start": 0, "length": 4},
                   {"modality": "text", "role": "tokens", "start": 3, "length": 2}]
    with pytest.raises(ValueError, match="overlap at position 3"):
        validate_token_layout(overlapping, 8)


def test_position_labels_use_cls_grid_cells_and_token_strings() -> None:
    labels = position_labels(LAYOUT, 9, {"text": ["a", "red"]})
    assert labels == ["[CLS]", "image (0,0)", "image (0,1)", "image (1,0)", "image (1,1)",
                      "a", "red", "text 2", "#8"]


def test_attention_response_is_json_with_the_api_shapes() -> None:
    model = sdpa_transformer(n_layers=3)
    attentions = capture_attention(model, padded_inputs(model, batch_size=1))
    response = attention_response(attentions, model.spec.token_layout, layer=1, head=2,
                                  query=7, tokens={"text": ["is", "it", "red"]})
    json.dumps(response, allow_nan=False)
    assert response["available"] and response["n_layers"] == 3 and response["n_heads"] == 4
    assert len(response["summary"]) == 3 and len(response["summary"][0]) == 4
    assert {"to_image", "to_text", "within", "to_cls", "entropy",
            "text->image"} <= set(response["summary"][1][2])
    assert len(response["map"]) == 11 and len(response["rollout"][0]) == 11
    torch.testing.assert_close(torch.tensor(response["map"]), attentions[1][0, 2])
    assert response["query_grid"] == attentions[1][0, 2, 7, 1:5].reshape(2, 2).tolist()
    assert response["labels"][5:8] == ["is", "it", "red"]
    assert len(response["cross_modal_share"]) == 3


def test_padding_positions_follow_the_token_segments() -> None:
    ids = {"text": torch.tensor([7, 9, 0]), "image": torch.zeros(4)}
    hidden = padding_positions(LAYOUT, 8, ids, {"text": 0, "image": None})
    assert hidden.tolist() == [False] * 7 + [True]
    # no pad id, or ids that do not line up with the segment: nothing is hidden
    assert not padding_positions(LAYOUT, 8, ids, {"text": None}).any()
    assert not padding_positions(LAYOUT, 8, {"text": torch.tensor([0, 0])}, {"text": 0}).any()
    # padding the model masks out is padding; padding it attends to stays in view
    masked = torch.softmax(torch.randn(1, 2, 8, 8), -1)
    masked[..., 7] = 0.0
    assert padding_positions(LAYOUT, 8, ids, {"text": 0}, attentions=[masked])[7]
    attended = torch.softmax(torch.randn(1, 2, 8, 8), -1)
    assert not padding_positions(LAYOUT, 8, ids, {"text": 0}, attentions=[attended]).any()


def test_attention_response_hides_padding_everywhere_consistently() -> None:
    """Cut after computing: the shown map is the full map's shown rows and columns, the
    query counts shown positions, segments are re-indexed, padded queries are not averaged."""
    a = torch.softmax(torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0)), -1)
    hide = torch.tensor([False, False, True, False, False, False, True, True])   # p1, 2 text
    full = attention_response([a, a], LAYOUT, layer=1, head=0, query=3)
    cut = attention_response([a, a], LAYOUT, layer=1, head=0, query=2, hide=hide,
                             tokens={"text": ["is", "[PAD]", "[PAD]"]})
    keep = [0, 1, 3, 4, 5]
    assert cut["labels"] == ["[CLS]", "image (0,0)", "image (1,0)", "image (1,1)", "is"]
    assert cut["query"] == 2 and full["query"] == 3        # the same position, image (1,0)
    assert torch.equal(torch.tensor(cut["map"]),
                       torch.tensor(full["map"])[keep][:, keep])
    assert torch.equal(torch.tensor(cut["rollout"]),
                       torch.tensor(full["rollout"])[keep][:, keep])
    assert [(s["modality"], s["start"], s["length"]) for s in cut["segments"]] == [
        (None, 0, 1), ("image", 1, 3), ("text", 4, 1)]
    assert "3 padding position(s) are not shown" in cut["note"]
    # the text queries' mean is over the one shown text token only
    expected = head_summary([a[:, :, :, :], a], LAYOUT,
                            query_mask=(~hide).reshape(1, 8))["text->image"][0, 1, 0]
    assert cut["summary"][1][0]["text->image"] == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="shows 5 positions"):
        attention_response([a], LAYOUT, query=5, hide=hide)


def test_attention_response_says_when_nothing_was_captured_or_layout_is_missing() -> None:
    empty = attention_response([], None)
    assert not empty["available"] and "attn_implementation='eager'" in empty["note"]
    a = torch.softmax(torch.randn(1, 2, 8, 8), -1)
    unimodal = torch.softmax(torch.randn(1, 2, 3, 3), -1)
    response = attention_response([unimodal, a], None)
    assert response["summary"] == [] and response["query_grid"] is None
    assert "token_layout" in response["note"] and "1 attention layer(s)" in response["note"]
    assert response["n_layers"] == 1


def test_explain_attention_defaults_to_last_layer_head_mean_and_cls_query() -> None:
    a = _hand_made_pattern()
    view = explain_attention([a, a.flip(1)], LAYOUT)
    assert (view["layer"], view["head"], view["query"]) == (1, None, 0)
    torch.testing.assert_close(view["map"], a[0].flip(0).mean(0))
    assert view["summary"]["entropy"].shape == (2, 2)
    assert math.isclose(float(view["query_grid"].sum()), (0 + 4 / 8) / 2)
    with pytest.raises(ValueError, match="has 2 heads"):
        explain_attention([a], LAYOUT, head=5)
    with pytest.raises(ValueError, match="1 attention layers"):
        explain_attention([a], LAYOUT, layer=1)
    with pytest.raises(ValueError, match=r"query=8: the sequence has 8 positions"):
        explain_attention([a], None, query=8)
