"""Model selection: ranking models by how closely their PID profile matches the data's."""

from __future__ import annotations

import numpy as np
import pytest

from estimators.pid import PIDResult, model_pid
from estimators.selection import interaction_profile, profile_distance, rank_models


def _result(r: float, u1: float, u2: float, s: float) -> PIDResult:
    return PIDResult(r, u1, u2, s, total=r + u1 + u2 + s)


def test_profile_is_the_share_of_each_atom() -> None:
    np.testing.assert_allclose(interaction_profile(_result(1, 0, 1, 2)), [0.25, 0, 0.25, 0.5])
    assert interaction_profile(_result(0, 0, 0, 0)) is None


def test_distance_is_total_variation_and_ignores_the_amount_of_information() -> None:
    assert profile_distance(_result(1, 0, 0, 0), _result(0, 0, 0, 1)) == pytest.approx(1.0)
    assert profile_distance(_result(1, 0, 0, 1), _result(2, 0, 0, 2)) == pytest.approx(0.0)
    assert profile_distance(_result(1, 0, 0, 1), _result(1, 0, 0, 0)) == pytest.approx(0.5)
    assert profile_distance(_result(0, 0, 0, 0), _result(0, 0, 0, 0)) == 0.0
    assert profile_distance(_result(0, 0, 0, 0), _result(1, 0, 0, 0)) == 1.0


def test_ranking_puts_the_closest_profile_first() -> None:
    data = _result(0.1, 0.0, 0.1, 0.8)                      # a synergy-heavy task
    models = {"late fusion": _result(0.5, 0.2, 0.3, 0.0),
              "tensor fusion": _result(0.1, 0.05, 0.1, 0.7),
              "x1 only": _result(0.0, 1.0, 0.0, 0.0)}
    ranking = rank_models(data, models)
    assert [m.name for m in ranking] == ["tensor fusion", "late fusion", "x1 only"]
    assert ranking[0].distance < ranking[1].distance < ranking[2].distance
    assert ranking[0].profile["pair"] == pytest.approx([0.1 / 0.95, 0.05 / 0.95, 0.1 / 0.95,
                                                        0.7 / 0.95])


def test_pairwise_results_are_averaged_over_shared_pairs() -> None:
    data = {"a|b": _result(1, 0, 0, 0), "a|c": _result(0, 0, 0, 1)}
    model = {"a|b": _result(1, 0, 0, 0), "a|c": _result(1, 0, 0, 0)}
    assert rank_models(data, {"m": model})[0].distance == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no modality pair in common"):
        rank_models(data, {"m": {"x|y": _result(1, 0, 0, 0)}})


def test_the_model_that_uses_both_modalities_is_chosen_for_synergistic_data() -> None:
    from estimators.pid import dataset_pid
    from tests.estimators.test_pid import _synergy_setup

    dataset, models = _synergy_setup()
    data = dataset_pid(dataset, n_clusters=4)
    pids = {name: model_pid(model, dataset, n_clusters=4) for name, model in models.items()}
    ranking = rank_models(data, pids)
    assert ranking[0].name == "both" and ranking[0].distance < 0.05
    assert ranking[1].distance > 0.9
