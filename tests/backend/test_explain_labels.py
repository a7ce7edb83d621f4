"""Element labels in explanation JSON: what a person reads on the heatmap axes."""

from __future__ import annotations

import torch

from backend.services.explain import element_labels
from estimators.model import ModalitySpec


def _layout(n_windows: int, size: int, length: int) -> dict:
    return {"index": None, "grid": [n_windows], "size": size, "feature_shape": [1, length]}


def test_time_windows_are_labelled_in_seconds_when_the_sample_rate_is_known() -> None:
    ecg = ModalitySpec(name="ecg", kind="timeseries", shape=(1, 20),
                       display={"sample_rate_hz": 10, "unit": "mV"})
    labels = element_labels(ecg, _layout(3, 8, 20), {"ecg": torch.zeros(1, 1, 20)})
    assert labels == ["0.00–0.80 s", "0.80–1.60 s", "1.60–2.00 s"]


def test_time_windows_fall_back_to_sample_indices() -> None:
    raw = ModalitySpec(name="sig", kind="timeseries", shape=(1, 20))
    labels = element_labels(raw, _layout(3, 8, 20), {"sig": torch.zeros(1, 1, 20)})
    assert labels == ["t0–7", "t8–15", "t16–19"]
