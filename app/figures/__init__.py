"""Pure figure builders: API response dicts in, ``plotly.graph_objects.Figure`` out.

No Dash, no HTTP: every builder is unit-tested without a browser. ``ATTRIBUTION_BUILDERS``
is the one table mapping a modality kind to its drawing.
"""

from app.figures.attention import attention_map_figure, head_grid_figure
from app.figures.interactions import interaction_figure, pair_from_event
from app.figures.modality import ATTRIBUTION_BUILDERS, modality_figure, patch_grid
from app.figures.prediction import probability_figure, whatif_figure

__all__ = [
    "ATTRIBUTION_BUILDERS",
    "attention_map_figure",
    "head_grid_figure",
    "interaction_figure",
    "modality_figure",
    "pair_from_event",
    "patch_grid",
    "probability_figure",
    "whatif_figure",
]
