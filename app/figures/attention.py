"""Attention views (VL-InterpreT style) from the ``POST /explain/attention`` response.

The layer × head grid summarises every head by one statistic (share of attention to the
image, to the text, within a modality, to CLS, entropy); clicking a cell opens that head's
full query × key map. Attention weights are non-negative, so they use a sequential scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from app.figures.style import HIGHLIGHT, SEQUENTIAL, base_layout, colorbar, heatmap_cell_from_event

METRIC_NAMES = {
    "within": "share of attention within the query's own modality",
    "cross": "share of attention across modalities",
    "to_cls": "share of attention to the CLS token",
    "entropy": "attention entropy (high = spread out, low = focused)",
}
MAX_TICKS = 40


def metric_label(metric: str) -> str:
    """Plain-language name of a per-head statistic (``to_<modality>``, ``<a>-><b>``, ...)."""
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    if metric.startswith("to_"):
        return f"share of attention to {metric[3:]} tokens"
    if "->" in metric:
        source, target = metric.split("->", 1)
        return f"share of attention from {source} to {target} tokens"
    return metric.replace("_", " ")


def metric_short(metric: str) -> str:
    """A colour-bar sized name: ``to image``, ``image → text``, ``entropy``."""
    return metric.replace("->", " → ").replace("_", " ")


def summary_metrics(result: dict) -> list[str]:
    """The statistics the API reported per head that tell heads apart, in a stable order
    (known ones first). A statistic that is null everywhere (e.g. "to text" when the
    sequence holds text only) or the same in every head ("within" = 1 with one modality)
    is left out, unless nothing else is left."""
    summary = result.get("summary") or []
    keys: list[str] = []
    values: dict[str, set[float]] = {}
    for row in summary:
        for cell in row:
            keys.extend(k for k in cell if k not in keys)
            for key, value in cell.items():
                if value is not None:
                    values.setdefault(key, set()).add(round(float(value), 6))
    informative = [k for k in keys if len(values.get(k, ())) > 1]
    keys = informative or [k for k in keys if k in values] or keys
    def order(key: str) -> tuple[int, str]:
        if key.startswith("to_") and key != "to_cls":
            return 0, key
        if "->" in key:
            return 1, key
        return 2 + (list(METRIC_NAMES).index(key) if key in METRIC_NAMES else 9), key

    return sorted(keys, key=order)


def head_from_event(event: dict | None) -> tuple[int, int] | None:
    """The ``(layer, head)`` a Dash ``clickData`` event on the head grid points at."""
    return heatmap_cell_from_event(event)


def head_grid_figure(result: dict, metric: str, *, selected: tuple[int, int] | None = None,
                     title: str | None = None) -> go.Figure:
    """Layer × head grid of one per-head statistic; ``customdata`` is ``[layer, head]``."""
    summary = result.get("summary") or []
    n_layers, n_heads = len(summary), max((len(r) for r in summary), default=0)
    z = np.full((n_layers, n_heads), np.nan)
    for layer, row in enumerate(summary):
        for head, cell in enumerate(row):
            value = cell.get(metric)
            z[layer, head] = np.nan if value is None else float(value)
    ll, hh = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    fig = go.Figure(go.Heatmap(
        # Nested lists, not an array: plotly would send an array as base64, and a click's
        # ``customdata`` would then not be the cell's [layer, head].
        z=z, customdata=np.stack([ll, hh], axis=-1).tolist(), colorscale=SEQUENTIAL,
        xgap=2, ygap=2,
        texttemplate="%{z:.2f}", textfont={"size": 13}, colorbar=colorbar(metric_short(metric)),
        hovertemplate="layer %{customdata[0]}, head %{customdata[1]}<br>%{z:.3f}"
                      "<extra>click to open</extra>"))
    if selected is not None:
        layer, head = selected
        fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5,
                      y1=layer + 0.5, line={"color": "#d9650b", "width": 4})
    base_layout(fig, title=title, height=max(260, 110 + 44 * n_layers))
    fig.update_xaxes(title_text="head", tickmode="linear", dtick=1, showgrid=False,
                     zeroline=False)
    fig.update_yaxes(title_text="layer", tickmode="linear", dtick=1, autorange="reversed",
                     showgrid=False, zeroline=False)
    return fig


def _ticks(labels: Sequence[str]) -> dict:
    stride = max(1, int(np.ceil(len(labels) / MAX_TICKS)))
    idx = list(range(0, len(labels), stride))
    return {"tickmode": "array", "tickvals": idx, "ticktext": [labels[k] for k in idx]}


def attention_map_figure(matrix: Sequence[Sequence[float]], labels: Sequence[str], *,
                         segments: Sequence[dict] | None = None, query: int | None = None,
                         title: str | None = None,
                         value_name: str = "attention weight") -> go.Figure:
    """Query (rows) × key (columns) weights; modality segments are separated by lines."""
    z = np.asarray(matrix, dtype=float)
    n = z.shape[0] if z.ndim == 2 else 0
    labels = list(labels)[:n] if len(labels) >= n else [str(k) for k in range(n)]
    rows = np.repeat(np.asarray(labels, dtype=object)[:, None], n, axis=1).astype(str)
    cols = np.repeat(np.asarray(labels, dtype=object)[None, :], n, axis=0).astype(str)
    fig = go.Figure(go.Heatmap(
        z=z, text=np.char.add(np.char.add(rows, " → "), cols), colorscale=SEQUENTIAL,
        zmin=0.0, colorbar=colorbar(value_name),
        hovertemplate="%{text}<br>" + value_name + " %{z:.3f}<extra></extra>"))
    for seg in segments or []:
        edge = seg["start"] - 0.5
        if edge > 0:
            fig.add_hline(y=edge, line={"color": "white", "width": 1.5})
            fig.add_vline(x=edge, line={"color": "white", "width": 1.5})
    if query is not None and 0 <= query < n:
        fig.add_shape(type="rect", x0=-0.5, x1=n - 0.5, y0=query - 0.5, y1=query + 0.5,
                      line={"color": HIGHLIGHT, "width": 2})
    base_layout(fig, title=title, height=520)
    fig.update_xaxes(title_text="key (attended to)", **_ticks(labels), tickangle=-60,
                     showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="query (attending)", **_ticks(labels), autorange="reversed",
                     showgrid=False, zeroline=False, scaleanchor="x", constrain="domain")
    return fig


def segment_of(segments: Sequence[dict] | None, modality: str) -> tuple[int, int] | None:
    """``(start, stop)`` positions of ``modality`` in the joint sequence, if it is there."""
    for seg in segments or []:
        if seg.get("modality") == modality:
            return int(seg["start"]), int(seg["start"]) + int(seg["length"])
    return None


def query_weights(matrix: Sequence[Sequence[float]], query: int,
                  span: tuple[int, int]) -> list[float]:
    """The chosen query's attention to the positions in ``span`` (e.g. the text tokens)."""
    row = np.asarray(matrix, dtype=float)[query]
    return row[span[0]:span[1]].tolist()
