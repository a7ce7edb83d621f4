"""Prediction views: class probabilities, and the what-if change when modalities are dropped."""

from __future__ import annotations

import plotly.graph_objects as go

from app.figures.style import NEGATIVE, NEUTRAL, POSITIVE, base_layout

MAX_CLASSES = 20


def _top(classes: list[str], probs: list[float], keep: set[int]) -> list[int]:
    """Class indices to draw: all of them, or the most likely ones plus any in ``keep``."""
    order = sorted(range(len(classes)), key=lambda k: -probs[k])
    if len(classes) <= MAX_CLASSES:
        return list(range(len(classes)))
    chosen = order[:MAX_CLASSES]
    chosen += [k for k in sorted(keep) if k not in chosen]
    return sorted(chosen)


def probability_figure(result: dict, *, title: str | None = None) -> go.Figure:
    """Horizontal bars of class probabilities; the predicted class in orange, the label marked."""
    classes, probs = list(result["classes"]), list(result["probs"])
    predicted, label = result.get("predicted"), result.get("label")
    shown = _top(classes, probs, {k for k in (predicted, label) if k is not None})
    names = [classes[k] + ("  ✓ label" if k == label else "") for k in shown]
    colors = [POSITIVE if k == predicted else NEUTRAL for k in shown]
    fig = go.Figure(go.Bar(
        x=[probs[k] for k in shown], y=names, orientation="h", marker_color=colors,
        text=[f"{probs[k]:.0%}" for k in shown], textposition="outside", cliponaxis=False,
        hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    base_layout(fig, title=title, height=max(200, 70 + 30 * len(shown)))
    fig.update_xaxes(title_text="probability", range=[0, 1.12], tickformat=".0%")
    fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def whatif_figure(result: dict, *, dropped: list[str], title: str | None = None) -> go.Figure:
    """Grouped bars: each class's probability before and after replacing ``dropped``."""
    classes = list(result["classes"])
    before, after = list(result["before"]), list(result["after"])
    keep = {result.get("predicted_before"), result.get("predicted_after")} - {None}
    shown = _top(classes, [max(b, a) for b, a in zip(before, after, strict=True)], keep)
    names = [classes[k] for k in shown]
    fig = go.Figure([
        go.Bar(name="with every modality", y=names, x=[before[k] for k in shown],
               orientation="h", marker_color=NEUTRAL,
               hovertemplate="%{y}: %{x:.3f}<extra>before</extra>"),
        go.Bar(name="without " + ", ".join(dropped), y=names, x=[after[k] for k in shown],
               orientation="h", marker_color=NEGATIVE,
               hovertemplate="%{y}: %{x:.3f}<extra>after</extra>"),
    ])
    base_layout(fig, title=title, height=max(220, 110 + 44 * len(shown)))
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": 1.02, "x": 0,
                                               "yanchor": "bottom"})
    fig.update_xaxes(title_text="probability", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(autorange="reversed", automargin=True)
    if result.get("predicted_before") != result.get("predicted_after"):
        fig.add_annotation(text="prediction changes", xref="paper", yref="paper", x=1,
                           y=1.02, yanchor="bottom", xanchor="right", showarrow=False,
                           font={"color": POSITIVE, "size": 15})
    return fig
