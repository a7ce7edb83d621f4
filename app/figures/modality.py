"""One drawing per modality kind: the input with its signed attribution laid over it.

``ATTRIBUTION_BUILDERS`` maps a modality ``kind`` (``ModalitySpec.kind``) to its builder; the
pages never branch on kinds themselves. Every builder takes the instance's ``ModalityView``
dict (``values`` and the kind's extras, from ``GET /datasets/{id}/instances/{index}``), an
optional attribution dict (``{"values": ...}`` reduced the same way, from
``POST /explain/attributions``) and ``highlight``: indices of *interaction elements* (image
patches, tokens, time windows, features, as in ``POST /explain/interactions``) to outline,
with ``n_elements`` the number of such elements for this modality.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import get_colorscale, sample_colorscale
from plotly.subplots import make_subplots

from app.figures.style import (
    DIVERGING,
    HIGHLIGHT,
    IMAGE_HIGHLIGHT,
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    SEQUENTIAL,
    base_layout,
    colorbar,
    symmetric_range,
)

ROW_CHARS = 44  # a text row holds about this many characters before it wraps
TOKEN_GAP = 0.6


def patch_grid(n_patches: int, height: int, width: int) -> tuple[int, int]:
    """Rows × columns of ``n_patches`` image patches, the factorisation closest to H:W."""
    best = (n_patches, 1)
    best_err = math.inf
    for rows in range(1, n_patches + 1):
        if n_patches % rows:
            continue
        cols = n_patches // rows
        err = abs(math.log((rows / cols) / (height / width)))
        if err < best_err:
            best, best_err = (rows, cols), err
    return best


def _image_pixels(view: dict) -> np.ndarray:
    return np.asarray(view["values"], dtype=float)


def image_figure(view: dict, attribution: dict | None = None, *, title: str | None = None,
                 highlight: Sequence[int] = (), n_elements: int | None = None,
                 opacity: float = 0.6, overlay: Any = None,
                 overlay_title: str = "attribution") -> go.Figure:
    """Grey image with a diverging attribution heatmap on top (``opacity`` 0..1).

    ``overlay`` (a coarser ``[gh][gw]`` grid, e.g. attention over patches) replaces the
    attribution with a sequential map stretched over the image.
    """
    pixels = _image_pixels(view)
    height, width = pixels.shape
    fig = go.Figure(go.Heatmap(z=pixels, colorscale="gray", showscale=False,
                               hovertemplate="x %{x}, y %{y}<br>pixel %{z:.3f}<extra></extra>",
                               name="image"))
    if attribution is not None:
        attr = np.asarray(attribution["values"], dtype=float)
        bound = symmetric_range(attr)
        fig.add_trace(go.Heatmap(
            z=attr, colorscale=DIVERGING, zmin=-bound, zmax=bound, zmid=0.0, opacity=opacity,
            colorbar=colorbar(f"{overlay_title} (signed)"), name=overlay_title, meta="overlay",
            hovertemplate="x %{x}, y %{y}<br>" + overlay_title + " %{z:.3g}<extra></extra>"))
    elif overlay is not None:
        grid = np.asarray(overlay, dtype=float)
        gh, gw = grid.shape
        fig.add_trace(go.Heatmap(
            z=grid, x0=(width / gw - 1) / 2, dx=width / gw, y0=(height / gh - 1) / 2,
            dy=height / gh, colorscale=SEQUENTIAL, zmin=0.0, opacity=opacity,
            colorbar=colorbar(overlay_title), name=overlay_title, meta="overlay",
            hovertemplate="patch row %{y:.0f}, col %{x:.0f}<br>" + overlay_title
                          + " %{z:.3f}<extra></extra>"))
    if highlight and n_elements:
        rows, cols = patch_grid(n_elements, height, width)
        ph, pw = height / rows, width / cols
        for index in highlight:
            r, c = divmod(int(index), cols)
            fig.add_shape(type="rect", x0=c * pw - 0.5, x1=(c + 1) * pw - 0.5,
                          y0=r * ph - 0.5, y1=(r + 1) * ph - 0.5,
                          line={"color": IMAGE_HIGHLIGHT, "width": 4})
    base_layout(fig, title=title, height=380)
    fig.update_xaxes(title_text="x (pixel)", range=[-0.5, width - 0.5], constrain="domain",
                     showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="y (pixel)", autorange="reversed", scaleanchor="x",
                     constrain="domain", showgrid=False, zeroline=False)
    return fig


def _token_layout(tokens: Sequence[str]) -> list[tuple[int, float, float]]:
    """``(row, x0, x1)`` per token: boxes as wide as their text, wrapped like a paragraph."""
    boxes, row, x = [], 0, 0.0
    for token in tokens:
        width = max(3.0, len(token) + 2.0)
        if x > 0 and x + width > ROW_CHARS:
            row, x = row + 1, 0.0
        boxes.append((row, x, x + width))
        x += width + TOKEN_GAP
    return boxes


def _text_colour(fill: str) -> str:
    """Dark text on light boxes, white on dark ones (``fill`` is ``rgb(r, g, b)``)."""
    r, g, b = (float(v) for v in fill[fill.index("(") + 1:fill.index(")")].split(","))
    return "#1f2933" if (0.299 * r + 0.587 * g + 0.114 * b) / 255 > 0.55 else "white"


def text_figure(view: dict, attribution: dict | None = None, *, title: str | None = None,
                highlight: Sequence[int] = (), n_elements: int | None = None,
                opacity: float = 1.0, weights: Sequence[float] | None = None,
                weights_title: str = "attention") -> go.Figure:
    """Tokens in reading order, wrapped like a paragraph, each box coloured by its value.

    Boxes are as wide as their token, so long words stay readable. ``weights``
    (non-negative, e.g. attention from a query) use a sequential scale instead of the
    diverging one. Repeated tokens stay separate boxes; ``customdata`` is the token index.
    """
    tokens = [str(t) for t in view.get("tokens") or []]
    n = len(tokens)
    source = attribution["values"] if attribution is not None else weights
    values = np.zeros(n)
    if source is not None:
        given = np.asarray(source, dtype=float)[:n]
        values[:given.size] = given
    if weights is not None and attribution is None:
        low, high, mid = 0.0, float(values.max()) if n and values.max() > 0 else 1.0, None
        scale, label = get_colorscale(SEQUENTIAL), weights_title
    else:
        bound = symmetric_range(values) if n else 1.0
        low, high, mid = -bound, bound, 0.0
        scale, label = DIVERGING, "attribution (signed)"
    fills = sample_colorscale(scale, list(np.clip((values - low) / (high - low), 0, 1)))
    boxes = _token_layout(tokens)
    chosen = {int(h) for h in highlight if 0 <= int(h) < min(n, n_elements or n)}
    fig = go.Figure(go.Scatter(
        x=[(x0 + x1) / 2 for _, x0, x1 in boxes], y=[row for row, _, _ in boxes],
        mode="markers", text=tokens, customdata=list(range(n)), name="tokens",
        marker={"size": 24, "opacity": 0, "color": values, "colorscale": scale, "cmin": low,
                "cmax": high, "cmid": mid, "showscale": source is not None,
                "colorbar": {**colorbar(label), "orientation": "h", "y": -0.04,
                             "yanchor": "top", "len": 0.6, "thickness": 10,
                             "title": {"text": label, "side": "top"}}},
        hovertemplate="token %{customdata}: %{text}<br>value %{marker.color:.3g}"
                      "<extra></extra>"))
    for k, ((row, x0, x1), token) in enumerate(zip(boxes, tokens, strict=True)):
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=row - 0.38, y1=row + 0.38,
                      fillcolor=fills[k], opacity=opacity, layer="below",
                      line={"color": HIGHLIGHT if k in chosen else "#d9e2ec",
                            "width": 3 if k in chosen else 1})
        fig.add_annotation(x=(x0 + x1) / 2, y=row, text=token, showarrow=False,
                           font={"size": 16, "color": _text_colour(fills[k])})
    n_rows = (boxes[-1][0] + 1) if boxes else 1
    base_layout(fig, title=title)
    top = fig.layout.margin.t
    bottom = 70 if source is not None else 16
    fig.update_layout(height=top + bottom + 46 * n_rows, margin={"b": bottom, "l": 16})
    fig.update_xaxes(visible=False, range=[-0.5, ROW_CHARS + 0.5])
    fig.update_yaxes(visible=False, range=[n_rows - 0.5, -0.5])
    return fig


def timeseries_figure(view: dict, attribution: dict | None = None, *, title: str | None = None,
                      highlight: Sequence[int] = (), n_elements: int | None = None,
                      opacity: float = 0.6) -> go.Figure:
    """One panel per channel: the signal as a line over a band coloured by attribution."""
    signal = np.atleast_2d(np.asarray(view["values"], dtype=float))
    n_channels, length = signal.shape
    rate = view.get("sample_rate_hz")
    unit = view.get("unit") or "value"
    step = 1.0 / rate if rate else 1.0
    t = np.arange(length) * step
    attr = (np.atleast_2d(np.asarray(attribution["values"], dtype=float))
            if attribution is not None else None)
    bound = symmetric_range(attr) if attr is not None else 1.0
    fig = make_subplots(rows=n_channels, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    for ch in range(n_channels):
        low, high = float(signal[ch].min()), float(signal[ch].max())
        pad = 0.05 * (high - low or 1.0)
        low, high = low - pad, high + pad
        if attr is not None:
            fig.add_trace(go.Heatmap(
                z=attr[ch][None, :], x=t, y0=(low + high) / 2, dy=high - low,
                colorscale=DIVERGING, zmin=-bound, zmax=bound, zmid=0.0, opacity=opacity,
                showscale=ch == 0, colorbar=colorbar("attribution (signed)"),
                name=f"attribution ch {ch + 1}", meta="overlay",
                hovertemplate="t %{x:.3f}<br>attribution %{z:.3g}<extra></extra>"),
                row=ch + 1, col=1)
        fig.add_trace(go.Scatter(
            x=t, y=signal[ch], mode="lines", line={"color": "#1f2933", "width": 1.6},
            name=f"channel {ch + 1}", showlegend=False,
            hovertemplate="t %{x:.3f}<br>%{y:.3f} " + unit + "<extra></extra>"),
            row=ch + 1, col=1)
        fig.update_yaxes(range=[low, high], row=ch + 1, col=1,
                         title_text=f"ch {ch + 1} ({unit})" if n_channels > 1 else unit)
    fig.update_xaxes(title_text="time (s)" if rate else "sample", row=n_channels, col=1)
    if highlight and n_elements:
        window = length / n_elements
        for index in highlight:
            fig.add_vrect(x0=(index * window - 0.5) * step, x1=((index + 1) * window - 0.5) * step,
                          line={"color": HIGHLIGHT, "width": 3}, fillcolor="rgba(0,0,0,0)",
                          row="all", col=1)
    base_layout(fig, title=title, height=max(300, 150 + 150 * n_channels))
    return fig


def tabular_figure(view: dict, attribution: dict | None = None, *, title: str | None = None,
                   highlight: Sequence[int] = (), n_elements: int | None = None,
                   opacity: float = 1.0) -> go.Figure:
    """Signed horizontal bars per feature (largest effect on top), labelled with the value."""
    values = np.asarray(view["values"], dtype=float).ravel()
    n = values.size
    names = list(view.get("feature_names") or [f"feature {k}" for k in range(n)])
    units = list(view.get("units") or [""] * n)
    labels = [f"{names[k]} = {values[k]:.3g}{(' ' + units[k]) if units[k] else ''}"
              for k in range(n)]
    attr = (np.asarray(attribution["values"], dtype=float).ravel()
            if attribution is not None else np.zeros(n))
    order = np.argsort(-np.abs(attr), kind="stable")
    chosen = set(int(h) for h in highlight)
    colors = [POSITIVE if attr[k] > 0 else NEGATIVE if attr[k] < 0 else NEUTRAL for k in order]
    fig = go.Figure(go.Bar(
        x=attr[order], y=[labels[k] for k in order], orientation="h", opacity=opacity,
        marker={"color": colors, "line": {"color": [HIGHLIGHT if k in chosen else colors[i]
                                                    for i, k in enumerate(order)],
                                          "width": [3 if k in chosen else 0 for k in order]}},
        customdata=order, hovertemplate="%{y}<br>attribution %{x:.3g}<extra></extra>"))
    base_layout(fig, title=title, height=max(260, 80 + 28 * n))
    fig.update_xaxes(title_text="attribution (+ for, − against)",
                     zeroline=True, zerolinecolor="#52606d", zerolinewidth=1.5)
    fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


Builder = Callable[..., go.Figure]

ATTRIBUTION_BUILDERS: dict[str, Builder] = {
    "image": image_figure,
    "text": text_figure,
    "timeseries": timeseries_figure,
    "audio": timeseries_figure,
    "tabular": tabular_figure,
}


def modality_figure(view: dict, attribution: dict | None = None, **kwargs: Any) -> go.Figure:
    """Draw one modality with the builder its kind calls for."""
    kind = view.get("kind", "")
    if kind not in ATTRIBUTION_BUILDERS:
        raise ValueError(f"no drawing for modality kind {kind!r}; "
                         f"known kinds: {sorted(ATTRIBUTION_BUILDERS)}")
    return ATTRIBUTION_BUILDERS[kind](view, attribution, **kwargs)
