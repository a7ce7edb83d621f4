"""Shared look of every figure: colour scales, fonts, margins.

Signed values (attributions, interactions) use one diverging blue–white–orange scale centred
on zero: blue and orange stay distinct for the common colour-vision deficiencies (unlike red
and green), and white means "no effect". Non-negative values (attention weights) use cividis,
a sequential scale designed to read the same with and without colour blindness.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import plotly.graph_objects as go

# Negative → blue, zero → white, positive → orange (after ColorBrewer PuOr/RdBu endpoints).
DIVERGING = [
    [0.0, "#1f4e9c"], [0.2, "#4f86c6"], [0.4, "#b7d0ea"], [0.5, "#ffffff"],
    [0.6, "#fdd1a5"], [0.8, "#f08a2c"], [1.0, "#a84200"],
]
SEQUENTIAL = "cividis"
POSITIVE = "#d9650b"  # orange: pushes towards the target class
NEGATIVE = "#2f6db5"  # blue: pushes away from it
NEUTRAL = "#9aa5b1"
HIGHLIGHT = "#111827"  # outline of a selected element, dark so it reads on both scale ends
IMAGE_HIGHLIGHT = "#ffb000"  # amber: stands out on dark and light pixels alike
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif",
        "size": 15, "color": "#1f2933"}


def symmetric_range(values: Iterable[float] | np.ndarray) -> float:
    """Half-width of a colour range centred on zero that covers every finite value.

    Never 0, so an all-zero map still draws (white) instead of failing to scale.
    """
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    bound = float(np.abs(finite).max()) if finite.size else 0.0
    return bound if bound > 0 else 1.0


def base_layout(fig: go.Figure, *, title: str | None = None, height: int = 360) -> go.Figure:
    """Readable defaults: large font, white background, compact margins, left-aligned title."""
    fig.update_layout(
        # The title sits just above the plotting area, below the hover toolbar, so the two
        # never overlap however long the title is.
        title={"text": title, "x": 0.0, "xanchor": "left", "yref": "paper", "y": 1.0,
               "yanchor": "bottom", "pad": {"b": 12}} if title else None,
        font=FONT, height=height, paper_bgcolor="white", plot_bgcolor="white",
        margin={"l": 70, "r": 30, "t": 84 if title else 24, "b": 60},
        hoverlabel={"font_size": 14},
    )
    return fig


def colorbar(title: str) -> dict:
    return {"title": {"text": title, "side": "right"}, "thickness": 14, "len": 0.9,
            "exponentformat": "power"}


def heatmap_cell_from_event(event: dict | None) -> tuple[int, int] | None:
    """The ``(row, column)`` of a heatmap cell that a Dash ``clickData``/``hoverData`` event
    points at: from the cell's ``customdata`` pair when the figure sets one, else from its
    ``y``/``x`` position."""
    if not event or not event.get("points"):
        return None
    point = event["points"][0]
    custom = point.get("customdata")
    if isinstance(custom, list | tuple) and len(custom) == 2:
        return int(custom[0]), int(custom[1])
    if "x" in point and "y" in point:
        return round(float(point["y"])), round(float(point["x"]))
    return None
