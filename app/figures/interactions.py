"""Cross-modal interaction heatmap: elements of modality A × elements of modality B.

Input is the ``POST /explain/interactions`` response. Cells sit on numeric axes (tick labels
are the element names) so repeated tokens never merge; the top pairs are ringed, and the
selected pair gets a thicker ring. ``customdata`` of every cell and marker is ``[i, j]`` so a
click or hover maps straight back to the pair.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from app.figures.style import (
    DIVERGING,
    HIGHLIGHT,
    base_layout,
    colorbar,
    heatmap_cell_from_event,
    symmetric_range,
)

MAX_TICKS = 40


def _ticks(labels: list[str]) -> dict:
    stride = max(1, int(np.ceil(len(labels) / MAX_TICKS)))
    idx = list(range(0, len(labels), stride))
    return {"tickmode": "array", "tickvals": idx, "ticktext": [labels[k] for k in idx]}


def interaction_figure(result: dict, *, selected: tuple[int, int] | None = None,
                       title: str | None = None) -> go.Figure:
    """Heatmap of the signed second-order interaction between elements of A and B."""
    matrix = np.asarray(result["matrix"], dtype=float)
    a_labels, b_labels = list(result["a_labels"]), list(result["b_labels"])
    n_a, n_b = len(a_labels), len(b_labels)
    if matrix.size == 0:
        matrix = np.zeros((n_a, n_b))
    bound = symmetric_range(matrix)
    ii, jj = np.meshgrid(np.arange(n_a), np.arange(n_b), indexing="ij")
    custom = np.stack([ii, jj], axis=-1).tolist()  # lists: a click gets [i, j] back
    a_text = np.repeat(np.asarray(a_labels, dtype=object)[:, None], n_b, axis=1)
    b_text = np.repeat(np.asarray(b_labels, dtype=object)[None, :], n_a, axis=0)
    hover_text = np.char.add(np.char.add(a_text.astype(str), " × "), b_text.astype(str))
    a, b = result["a"], result["b"]
    fig = go.Figure(go.Heatmap(
        z=matrix, customdata=custom, text=hover_text, colorscale=DIVERGING, zmin=-bound,
        zmax=bound, zmid=0.0, colorbar=colorbar("interaction (signed)"), name="interaction",
        hovertemplate="%{text}<br>interaction %{z:.3g}<extra></extra>"))
    pairs = result.get("top_pairs") or []
    if pairs:
        fig.add_trace(go.Scatter(
            x=[p["j"] for p in pairs], y=[p["i"] for p in pairs], mode="markers",
            marker={"symbol": "square-open", "size": 14, "color": HIGHLIGHT,
                    "line": {"width": 2}},
            customdata=[[p["i"], p["j"]] for p in pairs], name="top pairs",
            text=[f"#{rank + 1}: {p['a_label']} × {p['b_label']}" for rank, p in
                  enumerate(pairs)],
            hovertemplate="%{text}<extra>top pair</extra>", showlegend=False))
    if selected is not None:
        i, j = selected
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                      line={"color": HIGHLIGHT, "width": 4})
    base_layout(fig, title=title, height=max(380, min(760, 160 + 16 * n_a)))
    fig.update_xaxes(title_text=f"{b} elements", **_ticks(b_labels), tickangle=-45,
                     showgrid=False, zeroline=False, range=[-0.5, n_b - 0.5])
    fig.update_yaxes(title_text=f"{a} elements", **_ticks(a_labels), autorange="reversed",
                     showgrid=False, zeroline=False)
    return fig


def pair_from_event(event: dict | None) -> tuple[int, int] | None:
    """The ``(i, j)`` pair a Dash ``clickData``/``hoverData`` event on the heatmap points at."""
    return heatmap_cell_from_event(event)
