"""Instance explanations: synchronous, cached by content hash (``services/explain.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from backend.core.security import CurrentUser, SessionDep
from backend.schemas import (
    AttentionOut,
    AttentionRequest,
    AttributionOut,
    AttributionRequest,
    ExplainRequest,
    InteractionOut,
    InteractionRequest,
    PredictOut,
    WhatIfOut,
    WhatIfRequest,
)
from backend.services.explain import Explainer

router = APIRouter(prefix="/explain", tags=["explain"])
NOT_READY = {501: {"description": "this estimator or the .pt2 sandbox is not available"}}


def _explainer(request: Request) -> Explainer:
    return Explainer(request.app.state.settings, getattr(request.app.state, "sandbox", None))


@router.post("/predict", response_model=PredictOut)
def predict(body: ExplainRequest, request: Request, user: CurrentUser,
            session: SessionDep) -> Any:
    """Class probabilities of one instance."""
    return _explainer(request).predict(session, user, body)


@router.post("/attributions", response_model=AttributionOut, responses=NOT_READY)
def attributions(body: AttributionRequest, request: Request, user: CurrentUser,
                 session: SessionDep) -> Any:
    """Per-modality attributions of the target class (null = predicted), signed."""
    return _explainer(request).attributions(session, user, body)


@router.post("/interactions", response_model=InteractionOut, responses=NOT_READY)
def interactions(body: InteractionRequest, request: Request, user: CurrentUser,
                 session: SessionDep) -> Any:
    """Cross-modal second-order interactions between modalities a and b, per element."""
    return _explainer(request).interactions(session, user, body)


@router.post("/attention", response_model=AttentionOut, responses=NOT_READY)
def attention(body: AttentionRequest, request: Request, user: CurrentUser,
              session: SessionDep) -> Any:
    """Attention maps by layer and head, rollout and per-head summaries."""
    return _explainer(request).attention(session, user, body)


@router.post("/whatif", response_model=WhatIfOut, responses=NOT_READY)
def whatif(body: WhatIfRequest, request: Request, user: CurrentUser,
           session: SessionDep) -> Any:
    """The prediction before and after replacing the dropped modalities."""
    return _explainer(request).whatif(session, user, body)
