"""crosslens estimators: pure computation on multimodal PyTorch models (no web, no database)."""

from estimators.model import ModalitySpec, ModelSpec, MultimodalModel, TokenSegment

__all__ = ["ModalitySpec", "ModelSpec", "MultimodalModel", "TokenSegment"]
