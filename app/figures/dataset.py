"""Dataset-level figures: job results (``GET /jobs/{id}/result``) in, plotly figures out.

PID atoms in bits with bootstrap error bars, the EMAP gap, the interaction-type mix, modality
Shapley values (signed, so the axis is centred on zero), robustness curves, the model
ranking of ``model_selection`` and the instance map of ``embedding``. Pure functions:
unit-tested without a browser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from app.figures.style import FONT, NEGATIVE, NEUTRAL, POSITIVE, base_layout, symmetric_range

ATOMS = ("redundancy", "unique1", "unique2", "synergy")
DATA_COLOUR = "#4f86c6"   # the data: blue
MODEL_COLOUR = POSITIVE   # the model: orange
# Legends sit at the bottom of the figure, below the x-axis title, never on top of either.
BOTTOM_LEGEND = {"orientation": "h", "yref": "container", "y": 0.0, "yanchor": "bottom",
                 "x": 0.0, "xanchor": "left"}
SERIES_COLOURS = ("#2f6db5", "#d9650b", "#5b8c3a", "#7b4fa0", "#6b7280", "#b8860b")
# One colour per interaction type, the same in the bar chart and the instance map; "none"
# (no clear pattern) is grey so the typed instances stand out.
TYPE_COLOURS = {"dominance": SERIES_COLOURS[0], "complement": SERIES_COLOURS[1],
                "conflict": SERIES_COLOURS[2], "none": SERIES_COLOURS[4]}
CORRECT_SYMBOL, WRONG_SYMBOL = "circle", "x"
EMBEDDING_EXPLANATION = (
    "Each point is one instance, placed by the first two principal components (PC 1, PC 2) of "
    "how the model treats it: each modality's Shapley share, the pure interaction term "
    "relative to the output change and the class log-probabilities, standardised. Nearby "
    "instances are explained alike; the axes have no units. A cross marks a wrong prediction; "
    "click a point to open that instance.")
EMAP_EXPLANATION = (
    "EMAP replaces the model by its best additive approximation (each modality's effect "
    "averaged over the others): if the model is about as accurate as that projection, the "
    "way it combines modalities beyond adding them up does not help on this data.")
DISTANCE_EXPLANATION = (
    "Distance is the total-variation distance between a model's interaction profile (the "
    "shares of redundancy, unique and synergy in the PID of its predictions) and the data's: "
    "0 means the model uses the same kinds of interaction as the labels need, 1 none of them.")


def pair_names(pair: str) -> tuple[str, str]:
    """``"image|text"`` → ``("image", "text")``."""
    first, _, second = pair.partition("|")
    return first, second or "rest"


def atom_labels(pair: str) -> list[str]:
    """Bar labels for one pair: R, U(first), U(second), S."""
    a, b = pair_names(pair)
    return ["Redundancy", f"Unique to {a}", f"Unique to {b}", "Synergy"]


def _pid_bars(pid: Mapping[str, Any], name: str, colour: str, labels: list[str]) -> go.Bar:
    values = [float(pid.get(atom) or 0.0) for atom in ATOMS]
    ci = pid.get("ci") or {}
    error = None
    if all(atom in ci for atom in ATOMS):
        upper = [max(0.0, ci[atom][1] - v) for atom, v in zip(ATOMS, values, strict=True)]
        lower = [max(0.0, v - ci[atom][0]) for atom, v in zip(ATOMS, values, strict=True)]
        error = {"type": "data", "array": upper, "arrayminus": lower, "visible": True,
                 "color": "#1f2933", "thickness": 1.5, "width": 6}
    return go.Bar(x=labels, y=values, name=name, marker_color=colour, error_y=error,
                  hovertemplate="%{x}: %{y:.3f} bits<extra>" + name + "</extra>")


def pid_figure(pair: str, data: Mapping[str, Any] | None, model: Mapping[str, Any] | None,
               *, title: str | None = None) -> go.Figure:
    """PID of one pair of modalities in bits: the data's (labels) next to the model's
    (predictions), error bars = bootstrap 95 % intervals where the job computed them."""
    labels = atom_labels(pair)
    fig = go.Figure()
    if data is not None:
        fig.add_trace(_pid_bars(data, "data (labels)", DATA_COLOUR, labels))
    if model is not None:
        fig.add_trace(_pid_bars(model, "model (predictions)", MODEL_COLOUR, labels))
    a, b = pair_names(pair)
    base_layout(fig, title=title or f"Information about the label: {a} and {b}", height=380)
    fig.update_layout(barmode="group", legend=BOTTOM_LEGEND, margin={"b": 110})
    fig.update_yaxes(title_text="bits", rangemode="tozero", gridcolor="#e5e7eb")
    fig.update_xaxes(title_text="PID atom")
    return fig


def emap_figure(result: Mapping[str, Any]) -> go.Figure:
    """Accuracy of the model next to that of its additive projection (EMAP)."""
    names = ["model f", "additive projection EMAP(f)"]
    values = [float(result["accuracy"]), float(result["emap_accuracy"])]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=[MODEL_COLOUR, DATA_COLOUR],
                           text=[f"{v:.1%}" for v in values], textposition="outside",
                           hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    gap = float(result.get("gap", values[0] - values[1]))
    base_layout(fig, title=f"EMAP gap: {gap:+.1%} accuracy ({result.get('n', '?')} "
                           "instances)", height=360)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.15], tickformat=".0%",
                     gridcolor="#e5e7eb")
    fig.update_xaxes(title_text="predictor")
    return fig


def types_figure(result: Mapping[str, Any]) -> go.Figure:
    """Share of instances of each interaction type (dominance, complement, conflict, ...)."""
    types = list(result.get("types") or result["fractions"])
    fractions = [float(result["fractions"].get(t, 0.0)) for t in types]
    counts = [int(result.get("counts", {}).get(t, 0)) for t in types]
    colours = [type_colour(t, types) for t in types]
    fig = go.Figure(go.Bar(
        x=fractions, y=types, orientation="h", marker_color=colours,
        text=[f"{f:.0%} ({c})" for f, c in zip(fractions, counts, strict=True)],
        textposition="outside", customdata=counts,
        hovertemplate="%{y}: %{x:.1%} (%{customdata} instances)<extra></extra>"))
    base_layout(fig, title=f"Interaction types over {result.get('n', '?')} instances",
                height=80 + 48 * max(len(types), 3))
    fig.update_xaxes(title_text="share of instances", range=[0, 1.15], tickformat=".0%",
                     gridcolor="#e5e7eb")
    fig.update_yaxes(title_text="type", autorange="reversed")
    return fig


def type_colour(kind: str, types: list[str]) -> str:
    """The colour of an interaction type: fixed for the known ones, else by position among
    the unknown ones (after the colours the known types use)."""
    if kind in TYPE_COLOURS:
        return TYPE_COLOURS[kind]
    spare = [c for c in SERIES_COLOURS if c not in TYPE_COLOURS.values()]
    unknown = [t for t in types if t not in TYPE_COLOURS]
    return spare[unknown.index(kind) % len(spare)] if kind in unknown else NEUTRAL


def _axis_title(axis: int, variance: list[float]) -> str:
    """Short enough for the y-axis of a half-width panel; the panel text says what a PC is."""
    share = f" ({variance[axis - 1]:.0%} of the variance)" if len(variance) >= axis else ""
    return f"PC {axis}{share}"


def embedding_figure(result: Mapping[str, Any]) -> go.Figure:
    """The instance map of the ``embedding`` job: one point per instance (``customdata`` =
    its index, for click → instance), coloured by interaction type, a cross where the
    prediction is wrong."""
    kinds = [str(t) for t in result["type"]]
    labels, predicted = list(result["label"]), list(result["predicted"])
    dominant = list(result.get("dominant") or [None] * len(kinds))
    x, y = np.asarray(result["x"], dtype=float), np.asarray(result["y"], dtype=float)
    order = [t for t in TYPE_COLOURS if t in kinds] + sorted(set(kinds) - set(TYPE_COLOURS))
    fig = go.Figure()
    for kind in order:
        idx = [k for k, t in enumerate(kinds) if t == kind]
        correct = [labels[k] == predicted[k] for k in idx]
        fig.add_trace(go.Scatter(
            x=x[idx], y=y[idx], mode="markers", name=kind, customdata=idx,
            marker={"color": type_colour(kind, order), "size": 11, "opacity": 0.85,
                    "symbol": [CORRECT_SYMBOL if c else WRONG_SYMBOL for c in correct],
                    "line": {"width": 1, "color": "white"}},
            text=[f"instance {k}<br>label {labels[k]} · predicted {predicted[k]} "
                  f"({'correct' if c else 'wrong'})<br>type {kind} · dominant modality "
                  f"{dominant[k] or 'none'}" for k, c in zip(idx, correct, strict=True)],
            hovertemplate="%{text}<extra></extra>"))
    # Legend keys for the marker shapes (no data: the shape, not the colour, is the point);
    # dark, so they are not read as the grey of type "none".
    for name, symbol in (("correct prediction", CORRECT_SYMBOL),
                         ("wrong prediction", WRONG_SYMBOL)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker={"color": FONT["color"], "size": 10, "symbol": symbol},
                                 hoverinfo="skip"))
    variance = [float(v) for v in result.get("explained_variance") or []]
    wrong = sum(a != b for a, b in zip(labels, predicted, strict=True))
    base_layout(fig, title=f"Instance map: {len(kinds)} instances, {wrong} predicted wrong",
                height=500)
    fig.update_layout(legend=BOTTOM_LEGEND, margin={"b": 120}, hovermode="closest")
    fig.update_xaxes(title_text=_axis_title(1, variance), gridcolor="#e5e7eb",
                     zerolinecolor="#d1d5db")
    fig.update_yaxes(title_text=_axis_title(2, variance), gridcolor="#e5e7eb",
                     zerolinecolor="#d1d5db")
    return fig


def importance_figure(result: Mapping[str, Any]) -> go.Figure:
    """Mean modality Shapley value (signed, axis centred on zero) and mean |Shapley|."""
    names = list(result.get("modalities") or result["mean"])
    mean = [float(result["mean"][m]) for m in names]
    mean_abs = [float(result["mean_abs"][m]) for m in names]
    fig = go.Figure([
        go.Bar(x=mean, y=names, orientation="h", name="mean (signed)",
               marker_color=[POSITIVE if v >= 0 else NEGATIVE for v in mean],
               hovertemplate="%{y}: %{x:.3g}<extra>mean</extra>"),
        go.Bar(x=mean_abs, y=names, orientation="h", name="mean |value|",
               marker_color=NEUTRAL, hovertemplate="%{y}: %{x:.3g}<extra>mean |φ|</extra>"),
    ])
    bound = symmetric_range(mean + mean_abs) * 1.1
    output = result.get("output", "softmax")
    base_layout(fig, title="Modality importance (Shapley value of the predicted class)",
                height=200 + 70 * len(names))
    fig.update_layout(barmode="group", legend=BOTTOM_LEGEND, margin={"b": 110})
    fig.update_xaxes(title_text=f"Shapley value ({output} of the predicted class)",
                     range=[-bound, bound], zeroline=True, zerolinecolor="#1f2933",
                     zerolinewidth=1.5, gridcolor="#e5e7eb")
    fig.update_yaxes(title_text="modality")
    return fig


def robustness_figure(result: Mapping[str, Any]) -> go.Figure:
    """Accuracy as one modality at a time is corrupted more and more."""
    levels = [float(v) for v in result["levels"]]
    kind = result.get("kind", "noise")
    fig = go.Figure()
    for k, (name, acc) in enumerate(result["accuracy"].items()):
        fig.add_trace(go.Scatter(x=levels, y=acc, mode="lines+markers", name=f"{name} corrupted",
                                 line={"color": SERIES_COLOURS[k % len(SERIES_COLOURS)],
                                       "width": 2.5},
                                 hovertemplate="level %{x}: %{y:.1%}<extra>" + name
                                 + "</extra>"))
    if result.get("clean") is not None:
        fig.add_hline(y=float(result["clean"]), line_dash="dash", line_color=NEUTRAL,
                      annotation_text="clean accuracy", annotation_position="top right")
    base_layout(fig, title="Robustness: accuracy as one modality is corrupted", height=380)
    fig.update_layout(legend=BOTTOM_LEGEND, margin={"b": 110})
    x_title = ("noise level (× the modality's standard deviation)" if kind == "noise"
               else "fraction of the modality masked")
    fig.update_xaxes(title_text=x_title, gridcolor="#e5e7eb")
    fig.update_yaxes(title_text="accuracy", range=[0, 1.05], tickformat=".0%",
                     gridcolor="#e5e7eb")
    return fig


def data_profile(pid: Mapping[str, Any]) -> list[float]:
    """``[R, U1, U2, S]`` as shares of their sum (zeros when the PID carries no bits)."""
    atoms = np.clip([float(pid.get(a) or 0.0) for a in ATOMS], 0.0, None)
    total = float(atoms.sum())
    return (atoms / total).tolist() if total > 1e-12 else [0.0] * 4


def ranking_figure(result: Mapping[str, Any], pair: str | None = None) -> go.Figure:
    """Each model's interaction profile next to the data's, for one pair of modalities."""
    pairs = list(result.get("data") or {})
    pair = pair if pair in pairs else (pairs[0] if pairs else "pair")
    labels = atom_labels(pair)
    fig = go.Figure(go.Bar(x=labels, y=data_profile(result["data"][pair]) if pairs else [],
                           name="data (labels)", marker_color="#1f2933",
                           hovertemplate="%{x}: %{y:.1%}<extra>data</extra>"))
    for k, row in enumerate(result["ranking"]):
        profile = row.get("profile", {}).get(pair, [0.0] * 4)
        fig.add_trace(go.Bar(x=labels, y=profile, name=f"#{k + 1} {row['name']}",
                             marker_color=SERIES_COLOURS[k % len(SERIES_COLOURS)],
                             hovertemplate="%{x}: %{y:.1%}<extra>" + str(row["name"])
                             + "</extra>"))
    a, b = pair_names(pair)
    base_layout(fig, title=f"Interaction profiles ({a} and {b}): models vs data", height=400)
    fig.update_layout(barmode="group", legend=BOTTOM_LEGEND, margin={"b": 110})
    fig.update_yaxes(title_text="share of the information", range=[0, 1.05],
                     tickformat=".0%", gridcolor="#e5e7eb")
    fig.update_xaxes(title_text="PID atom")
    return fig
