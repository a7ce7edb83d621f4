"""Figure builders: API-shaped dicts in, plotly figures out; checked without a browser."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from app.figures import (
    ATTRIBUTION_BUILDERS,
    attention_map_figure,
    head_grid_figure,
    interaction_figure,
    modality_figure,
    pair_from_event,
    patch_grid,
    probability_figure,
    whatif_figure,
)
from app.figures.attention import (
    head_from_event,
    metric_label,
    query_weights,
    segment_of,
    summary_metrics,
)
from app.figures.style import DIVERGING, symmetric_range

RNG = np.random.default_rng(0)
IMAGE = {"kind": "image", "shape": [1, 8, 8], "values": RNG.random((8, 8)).tolist(),
         "channels": [RNG.random((8, 8)).tolist()]}
TEXT = {"kind": "text", "shape": [6], "values": [2, 3, 4, 3, 5, 6],
        "tokens": ["is", "it", "a", "it", "7", "?"], "ids": [2, 3, 4, 3, 5, 6]}
SERIES = {"kind": "timeseries", "shape": [2, 50], "values": RNG.normal(size=(2, 50)).tolist(),
          "sample_rate_hz": 25, "unit": "mV"}
TABLE = {"kind": "tabular", "shape": [3], "values": [72.0, 120.0, 0.5],
         "feature_names": ["HR", "SBP", "lactate"], "units": ["bpm", "mmHg", "mmol/L"]}
VIEWS = {"image": IMAGE, "text": TEXT, "timeseries": SERIES, "tabular": TABLE}
ATTRS = {
    "image": {"values": RNG.normal(size=(8, 8)).tolist()},
    "text": {"values": [0.5, -0.25, 0.0, 1.0, -2.0, 0.1]},
    "timeseries": {"values": RNG.normal(size=(2, 50)).tolist()},
    "tabular": {"values": [0.3, -0.9, 0.0]},
}


def _heatmaps(fig: go.Figure) -> list[go.Heatmap]:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def test_every_modality_kind_of_the_model_contract_has_a_builder() -> None:
    assert set(ATTRIBUTION_BUILDERS) == {"image", "text", "timeseries", "tabular", "audio"}
    with pytest.raises(ValueError, match="no drawing for modality kind 'video'"):
        modality_figure({"kind": "video", "values": []})


@pytest.mark.parametrize("kind", sorted(VIEWS))
def test_signed_attributions_use_a_diverging_scale_centred_on_zero(kind: str) -> None:
    fig = modality_figure(VIEWS[kind], ATTRS[kind], title=kind)
    json.dumps(fig.to_plotly_json(), default=str)  # serialisable for Dash
    values = np.asarray(ATTRS[kind]["values"], dtype=float)
    if kind == "tabular":
        bar = fig.data[0]
        colors = dict(zip(bar.customdata.tolist(), bar.marker.color, strict=True))
        assert colors[0] != colors[1]  # positive and negative bars differ in colour
        assert list(bar.x) == sorted(bar.x, key=abs, reverse=True)  # largest effect first
        return
    if kind == "text":
        marker = fig.data[0].marker
        assert marker.cmid == 0.0 and marker.cmax == np.abs(values).max() == -marker.cmin
        assert [c[1] for c in marker.colorscale] == [c[1] for c in DIVERGING]
        return
    signed = [h for h in _heatmaps(fig) if h.zmid == 0.0]
    assert signed, "no attribution layer"
    layer = signed[0]
    assert layer.zmin == -layer.zmax == -np.abs(values).max()
    assert [c[1] for c in layer.colorscale] == [c[1] for c in DIVERGING]


def test_image_overlay_opacity_and_pixel_axes() -> None:
    fig = modality_figure(IMAGE, ATTRS["image"], opacity=0.3)
    grey, attr = _heatmaps(fig)
    assert attr.opacity == 0.3 and grey.showscale is False
    assert attr.meta == "overlay" and grey.meta is None  # what the opacity slider changes
    assert fig.layout.xaxis.title.text == "x (pixel)"
    assert fig.layout.yaxis.autorange == "reversed"  # row 0 at the top, as images are


def test_image_highlight_outlines_the_interaction_patch() -> None:
    # 16 patches over an 8×8 image -> a 4×4 grid of 2×2 patches; patch 5 is row 1, col 1.
    fig = modality_figure(IMAGE, None, highlight=[5], n_elements=16)
    (rect,) = fig.layout.shapes
    assert (rect.x0, rect.x1, rect.y0, rect.y1) == (1.5, 3.5, 1.5, 3.5)


@pytest.mark.parametrize(("n", "h", "w", "grid"), [
    (49, 28, 28, (7, 7)), (16, 8, 8, (4, 4)), (8, 8, 16, (2, 4)), (6, 30, 10, (3, 2)),
    (7, 8, 8, (7, 1))])
def test_patch_grid_is_the_factorisation_closest_to_the_image_aspect(
        n: int, h: int, w: int, grid: tuple[int, int]) -> None:
    assert patch_grid(n, h, w) == grid


def test_query_attention_is_stretched_over_the_whole_image() -> None:
    fig = modality_figure(IMAGE, None, overlay=[[0.1, 0.2], [0.3, 0.4]],
                          overlay_title="attention")
    grid = _heatmaps(fig)[1]
    assert grid.dx == 4 and grid.dy == 4  # two 4-pixel patches per side
    assert grid.x0 - grid.dx / 2 == -0.5  # first patch starts at the image's left edge


def test_text_tokens_keep_duplicates_wrap_and_fit_their_words() -> None:
    tokens = ["it", "is", "it"] + ["tachycardia"] * 6
    view = {"kind": "text", "tokens": tokens, "values": []}
    fig = modality_figure(view, {"values": [float(k) for k in range(len(tokens))]},
                          highlight=[2])
    hover = fig.data[0]
    assert list(hover.customdata) == list(range(len(tokens)))  # repeated "it" stays separate
    assert [a.text for a in fig.layout.annotations] == tokens
    boxes = fig.layout.shapes
    assert boxes[3].x1 - boxes[3].x0 > boxes[0].x1 - boxes[0].x0  # long words get wide boxes
    assert len({round(b.y0) for b in boxes}) > 1  # wrapped onto a second row
    assert boxes[2].line.width == 3 and boxes[0].line.width == 1  # token 2 highlighted
    assert hover.marker.cmid == 0.0 and hover.marker.cmin == -hover.marker.cmax


def test_text_weights_use_a_sequential_scale_from_zero() -> None:
    fig = modality_figure(TEXT, None, weights=[0.1, 0.5, 0.1, 0.1, 0.1, 0.1])
    marker = fig.data[0].marker
    assert marker.cmin == 0.0 and marker.cmax == 0.5 and marker.cmid is None
    dark = [a.font.color for a in fig.layout.annotations]
    assert dark[1] != dark[0]  # text colour follows the box: readable on both ends


def test_time_series_has_one_panel_per_channel_in_seconds_and_units() -> None:
    fig = modality_figure(SERIES, ATTRS["timeseries"], highlight=[1], n_elements=5)
    lines = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(lines) == 2
    assert lines[0].x[-1] == pytest.approx(49 / 25)
    assert fig.layout.xaxis2.title.text == "time (s)"
    assert fig.layout.yaxis.title.text == "ch 1 (mV)"
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert rects and rects[0].x0 == pytest.approx((10 - 0.5) / 25)  # window 1 of 5 (10 samples)


def test_tabular_bars_label_features_with_values_and_units() -> None:
    fig = modality_figure(TABLE, ATTRS["tabular"], highlight=[1])
    bar = fig.data[0]
    assert bar.y[0] == "SBP = 120 mmHg"  # the largest |attribution| first
    assert bar.marker.line.width[0] == 3  # and it is the highlighted feature


def test_all_zero_map_still_draws_with_a_usable_range() -> None:
    assert symmetric_range([0.0, 0.0]) == 1.0
    assert symmetric_range([np.nan, -2.0, 1.0]) == 2.0
    fig = modality_figure(IMAGE, {"values": np.zeros((8, 8)).tolist()})
    assert _heatmaps(fig)[1].zmax == 1.0


INTERACTION = {
    "a": "image", "b": "text", "target": 1,
    "a_labels": [f"patch {k}" for k in range(4)], "b_labels": ["it", "is", "it"],
    "matrix": [[0.0, 1.0, -3.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.2], [2.0, 0.0, 0.0]],
    "top_pairs": [{"i": 0, "j": 2, "value": -3.0, "a_label": "patch 0", "b_label": "it"},
                  {"i": 3, "j": 0, "value": 2.0, "a_label": "patch 3", "b_label": "it"}],
    "all_zero": False, "note": None,
}


def test_interaction_heatmap_keeps_repeated_labels_and_rings_top_pairs() -> None:
    fig = interaction_figure(INTERACTION, selected=(3, 0))
    heat, pairs = fig.data
    assert heat.zmin == -3.0 and heat.zmax == 3.0 and heat.zmid == 0.0
    assert list(fig.layout.xaxis.ticktext) == ["it", "is", "it"]
    assert heat.text[0][2] == "patch 0 × it"
    assert list(pairs.x) == [2, 0] and list(pairs.y) == [0, 3]
    assert fig.layout.xaxis.title.text == "text elements"
    (ring,) = fig.layout.shapes
    assert (ring.x0, ring.y0) == (-0.5, 2.5)


def test_a_click_on_a_cell_or_a_top_pair_maps_back_to_the_pair() -> None:
    assert pair_from_event({"points": [{"x": 2, "y": 0, "customdata": [0, 2]}]}) == (0, 2)
    assert pair_from_event({"points": [{"x": 1, "y": 3}]}) == (3, 1)
    assert pair_from_event(None) is None
    assert pair_from_event({"points": []}) is None


ATTENTION = {
    "available": True, "note": None, "n_layers": 2, "n_heads": 3,
    "labels": ["[CLS]", "p0", "p1", "p2", "p3", "is", "it"],
    "segments": [{"modality": None, "role": "cls", "start": 0, "length": 1},
                 {"modality": "image", "role": "patches", "start": 1, "length": 4,
                  "grid": [2, 2]},
                 {"modality": "text", "role": "tokens", "start": 5, "length": 2}],
    "summary": [[{"entropy": 1.0 + h, "to_image": 0.1 * h, "text->image": 0.5 + 0.1 * h}
                 for h in range(3)] for _ in range(2)],
    "map": (np.ones((7, 7)) / 7).tolist(),
    "rollout": np.eye(7).tolist(),
    "query_grid": [[0.1, 0.2], [0.3, 0.4]],
}


def test_head_summaries_that_do_not_tell_heads_apart_are_not_offered() -> None:
    """A text-only sequence (a pretrained text encoder): "to note" is null everywhere and
    "within" is 1 in every head, so only entropy is worth a grid."""
    text_only = {**ATTENTION, "summary": [[
        {"to_note": None, "within": 1.0, "cross": 0.0, "to_cls": 0.0, "entropy": 1.0 + h}
        for h in range(3)] for _ in range(2)]}
    assert summary_metrics(text_only) == ["entropy"]
    constant = {**ATTENTION, "summary": [[{"within": 1.0, "to_x": None}]]}
    assert summary_metrics(constant) == ["within"]   # nothing varies: still something to show


def test_head_grid_is_layer_by_head_and_marks_the_open_head() -> None:
    assert summary_metrics(ATTENTION) == ["to_image", "text->image", "entropy"]
    assert metric_label("text->image") == "share of attention from text to image tokens"
    assert metric_label("to_ecg") == "share of attention to ecg tokens"
    fig = head_grid_figure(ATTENTION, "to_image", selected=(1, 2))
    (heat,) = fig.data
    assert heat.z.shape == (2, 3) and heat.z[1][2] == pytest.approx(0.2)
    assert list(heat.customdata[1][2]) == [1, 2]
    assert head_from_event({"points": [{"x": 2, "y": 1, "customdata": [1, 2]}]}) == (1, 2)
    assert head_from_event({"points": [{"x": 0, "y": 1, "customdata": {"bdata": "x"}}]}) == (1, 0)
    assert head_from_event(None) is None
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"
    assert fig.layout.shapes[0].x0 == 1.5


def test_attention_map_draws_segment_borders_and_the_query_row() -> None:
    fig = attention_map_figure(ATTENTION["map"], ATTENTION["labels"],
                               segments=ATTENTION["segments"], query=5)
    assert fig.data[0].zmin == 0.0
    assert fig.layout.yaxis.title.text == "query (attending)"
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 4  # image and text segment starts, horizontal and vertical
    assert segment_of(ATTENTION["segments"], "text") == (5, 7)
    assert query_weights(ATTENTION["map"], 5, (5, 7)) == pytest.approx([1 / 7, 1 / 7])


def test_probabilities_mark_prediction_and_label() -> None:
    fig = probability_figure({"classes": ["cat", "dog", "emu"], "probs": [0.2, 0.7, 0.1],
                              "predicted": 1, "label": 0, "logits": [0, 1, -1]})
    bar = fig.data[0]
    assert list(bar.y) == ["cat  ✓ label", "dog", "emu"]
    assert bar.marker.color[1] != bar.marker.color[0]
    assert fig.layout.xaxis.tickformat == ".0%"


def test_many_classes_show_the_likely_ones_and_the_label() -> None:
    probs = np.full(100, 0.001)
    probs[42], probs[7] = 0.8, 0.0
    fig = probability_figure({"classes": [str(k) for k in range(100)], "probs": probs.tolist(),
                              "predicted": 42, "label": 7})
    assert "42" in fig.data[0].y and "7  ✓ label" in fig.data[0].y and len(fig.data[0].y) == 21


def test_whatif_compares_before_and_after_and_flags_a_changed_prediction() -> None:
    fig = whatif_figure({"classes": ["a", "b"], "before": [0.9, 0.1], "after": [0.3, 0.7],
                         "predicted_before": 0, "predicted_after": 1}, dropped=["text"])
    assert [t.name for t in fig.data] == ["with every modality", "without text"]
    assert fig.layout.annotations[0].text == "prediction changes"
