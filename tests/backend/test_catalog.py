"""Catalog identities: what cached explanations and job results are keyed by."""

from __future__ import annotations

from backend.db import ModelRecord
from backend.services.catalog import model_fingerprint


def _row(**changes: object) -> ModelRecord:
    fields = {"project_id": 1, "name": "m", "format": "safetensors",
              "architecture": "late_fusion", "params": {"dim": 8}, "spec": {"classes": ["a"]},
              "sha256": "0" * 64, "size_bytes": 1}
    return ModelRecord(**{**fields, **changes})


def test_same_weights_under_another_config_or_spec_is_another_model() -> None:
    base = model_fingerprint(_row())
    assert model_fingerprint(_row(name="renamed", project_id=2)) == base
    assert model_fingerprint(_row(spec={"classes": ["b"]})) != base
    assert model_fingerprint(_row(params={"dim": 16})) != base
    assert model_fingerprint(_row(architecture="early_fusion")) != base
    assert model_fingerprint(_row(sha256="1" * 64)) != base
