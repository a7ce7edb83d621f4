"""Dataset-level figures and job helpers: job-result-shaped dicts in, plotly figures out."""

from __future__ import annotations

import pytest

from app.components.jobs import (
    all_final,
    can_run,
    clicked_instance_href,
    existing_jobs,
    matches,
    model_ids,
    progress_row,
    ranking_rows,
    requests_for,
)
from app.figures.dataset import (
    TYPE_COLOURS,
    data_profile,
    emap_figure,
    embedding_figure,
    importance_figure,
    pid_figure,
    ranking_figure,
    robustness_figure,
    types_figure,
)

PID = {"redundancy": 0.2, "unique1": 0.5, "unique2": 0.05, "synergy": 0.3, "total": 1.05,
       "ci": {"redundancy": [0.1, 0.25], "unique1": [0.4, 0.6], "unique2": [0.0, 0.1],
              "synergy": [0.2, 0.45]}}
MODEL_PID = {"redundancy": 0.1, "unique1": 0.6, "unique2": 0.0, "synergy": 0.1, "total": 0.8}


def test_pid_figure_groups_data_and_model_bars_in_bits_with_bootstrap_error_bars() -> None:
    fig = pid_figure("image|text", PID, MODEL_PID)
    data, model = fig.data
    assert fig.layout.barmode == "group"
    assert list(data.x) == ["Redundancy", "Unique to image", "Unique to text", "Synergy"]
    assert fig.layout.yaxis.title.text == "bits" and fig.layout.xaxis.title.text
    # asymmetric interval: upper = hi - value, lower = value - lo
    assert list(data.error_y.array) == pytest.approx([0.05, 0.1, 0.05, 0.15])
    assert list(data.error_y.arrayminus) == pytest.approx([0.1, 0.1, 0.05, 0.1])
    assert model.error_y.array is None  # no CI computed: no error bars invented
    assert "image" in fig.layout.title.text and "text" in fig.layout.title.text


def test_emap_figure_shows_both_accuracies_and_the_signed_gap_in_the_title() -> None:
    fig = emap_figure({"accuracy": 0.9, "emap_accuracy": 0.75, "gap": 0.15, "n": 40})
    assert list(fig.data[0].y) == [0.9, 0.75]
    assert "+15.0%" in fig.layout.title.text
    assert fig.layout.yaxis.title.text == "accuracy" and fig.layout.xaxis.title.text


def test_types_figure_draws_every_type_as_a_share_with_its_count() -> None:
    result = {"n": 10, "types": ["dominance", "complement", "conflict"],
              "fractions": {"dominance": 0.6, "complement": 0.3, "conflict": 0.1},
              "counts": {"dominance": 6, "complement": 3, "conflict": 1}}
    fig = types_figure(result)
    assert list(fig.data[0].y) == ["dominance", "complement", "conflict"]
    assert list(fig.data[0].x) == [0.6, 0.3, 0.1]
    assert fig.data[0].text[0] == "60% (6)"
    assert fig.layout.xaxis.title.text == "share of instances" and fig.layout.yaxis.title.text


def test_importance_figure_is_centred_on_zero_and_colours_by_sign() -> None:
    fig = importance_figure({"modalities": ["image", "text"], "output": "softmax",
                             "mean": {"image": 0.4, "text": -0.1},
                             "mean_abs": {"image": 0.45, "text": 0.2}})
    low, high = fig.layout.xaxis.range
    assert low == pytest.approx(-high) and high >= 0.45
    signed = fig.data[0]
    assert signed.marker.color[0] != signed.marker.color[1]
    assert "Shapley" in fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


def test_robustness_figure_has_one_labelled_curve_per_modality_and_the_clean_line() -> None:
    fig = robustness_figure({"kind": "noise", "levels": [0, 0.5, 1.0], "clean": 0.9,
                             "accuracy": {"image": [0.9, 0.6, 0.4], "text": [0.9, 0.85, 0.8]}})
    assert [t.name for t in fig.data] == ["image corrupted", "text corrupted"]
    assert "noise level" in fig.layout.xaxis.title.text
    assert fig.layout.yaxis.title.text == "accuracy"
    assert any(s.y0 == 0.9 for s in fig.layout.shapes)
    masked = robustness_figure({"kind": "mask", "levels": [0, 1], "clean": None,
                                "accuracy": {"image": [0.9, 0.5]}})
    assert "masked" in masked.layout.xaxis.title.text


def test_ranking_figure_puts_the_data_profile_next_to_each_model_in_rank_order() -> None:
    result = {"data": {"image|text": PID}, "ranking": [
        {"model_id": 2, "name": "late", "distance": 0.1, "accuracy": 0.8,
         "profile": {"image|text": [0.1, 0.7, 0.0, 0.2]}},
        {"model_id": 1, "name": "early", "distance": 0.4, "accuracy": 0.7,
         "profile": {"image|text": [0.0, 1.0, 0.0, 0.0]}}]}
    fig = ranking_figure(result)
    assert [t.name for t in fig.data] == ["data (labels)", "#1 late", "#2 early"]
    assert sum(fig.data[0].y) == pytest.approx(1.0)
    assert fig.layout.yaxis.title.text and fig.layout.xaxis.title.text
    assert ranking_rows(result)[0] == {"rank": 1, "model": "late", "distance": "0.100",
                                       "accuracy": "80.0%"}


def test_data_profile_of_an_empty_pid_is_zero_not_a_division_error() -> None:
    assert data_profile({"redundancy": 0, "unique1": 0, "unique2": 0, "synergy": 0}) == [0] * 4


def test_existing_jobs_prefer_a_finished_result_and_match_model_ids_as_a_set() -> None:
    jobs = [  # newest first, as the API lists them
        {"id": 3, "kind": "emap", "state": "failed", "params": {"dataset_id": 1, "model_id": 2}},
        {"id": 2, "kind": "emap", "state": "succeeded",
         "params": {"dataset_id": 1, "model_id": 2, "max_instances": 1000}},
        {"id": 1, "kind": "model_selection", "state": "running",
         "params": {"dataset_id": 1, "model_ids": [5, 4]}},
    ]
    found = existing_jobs(jobs, {"emap": {"dataset_id": 1, "model_id": 2},
                                 "model_selection": {"dataset_id": 1, "model_ids": [4, 5]},
                                 "robustness": {"dataset_id": 1, "model_id": 2}})
    assert found["emap"]["id"] == 2 and found["model_selection"]["id"] == 1
    assert "robustness" not in found
    assert not matches(jobs[1], "emap", {"dataset_id": 1, "model_id": 3})
    assert not all_final(found) and all_final({"emap": jobs[0]}) and all_final({})


def test_only_editors_and_admins_may_run_analyses() -> None:
    assert can_run("editor") and can_run("admin")
    assert not can_run("viewer") and not can_run(None)


def test_requests_and_model_ids_come_from_the_selection_and_the_url() -> None:
    assert requests_for(None, 1) == {"data_pid": {"dataset_id": 1}}
    assert requests_for(3, None) == {}
    assert set(requests_for(3, 1)) == {"data_pid", "model_pid", "emap", "interaction_types",
                                       "modality_importance", "robustness", "embedding"}
    assert model_ids("3-5-x-3") == [3, 5] and model_ids([2, 1]) == [2, 1]
    assert model_ids(None) == []


def _find(component, predicate) -> list:
    """Every component in a Dash tree that satisfies ``predicate``."""
    found = [component] if predicate(component) else []
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str):
            found += _find(child, predicate)
    return found


def test_progress_row_shows_percent_and_a_cancel_button_only_while_running_for_editors() -> None:
    running = {"id": 7, "state": "running", "progress": 0.42, "message": "chunk 2/5"}
    row = progress_row("EMAP gap", running, cancellable=True, cancel_id={"kind": "emap"})
    bar = _find(row, lambda c: getattr(c, "role", None) == "progressbar")[0]
    assert bar.to_plotly_json()["props"]["aria-valuenow"] == 42
    assert bar.children.style == {"width": "42%"}
    assert len(_find(row, lambda c: type(c).__name__ == "Button")) == 1
    viewer = progress_row("EMAP gap", running, cancellable=False, cancel_id={"kind": "emap"})
    assert not _find(viewer, lambda c: type(c).__name__ == "Button")
    failed = progress_row("EMAP gap", {**running, "state": "failed", "error": "model crashed"},
                          cancellable=True, cancel_id={"kind": "emap"})
    assert not _find(failed, lambda c: type(c).__name__ == "Button")
    assert "model crashed" in str(failed.to_plotly_json())


EMBEDDING = {"n": 5, "x": [0.1, -1.2, 2.0, 0.4, -0.3], "y": [1.0, 0.2, -0.5, 0.0, 0.7],
             "explained_variance": [0.62, 0.21],
             "type": ["dominance", "conflict", "dominance", "complement", "none"],
             "dominant": ["image", None, "text", None, None],
             "label": [1, 0, 2, 1, 0], "predicted": [1, 2, 2, 1, 0]}


def test_embedding_figure_colours_each_type_as_the_types_bar_chart_does() -> None:
    fig = embedding_figure(EMBEDDING)
    points = [t for t in fig.data if t.x[0] is not None]
    assert [t.name for t in points] == ["dominance", "complement", "conflict", "none"]
    bars = types_figure({"n": 5, "types": ["dominance", "complement", "conflict", "none"],
                         "fractions": {"dominance": 0.4, "complement": 0.2, "conflict": 0.2,
                                       "none": 0.2}})
    assert [t.marker.color for t in points] == list(bars.data[0].marker.color)
    assert len({TYPE_COLOURS[t] for t in TYPE_COLOURS}) == len(TYPE_COLOURS)


def test_embedding_points_carry_their_instance_index_and_mark_wrong_predictions() -> None:
    fig = embedding_figure(EMBEDDING)
    by_type = {t.name: t for t in fig.data}
    assert list(by_type["dominance"].customdata) == [0, 2]
    assert list(by_type["dominance"].x) == [0.1, 2.0]
    assert list(by_type["conflict"].customdata) == [1]
    assert sorted(i for t in fig.data if t.customdata is not None for i in t.customdata) == [
        0, 1, 2, 3, 4]
    assert list(by_type["dominance"].marker.symbol) == ["circle", "circle"]
    assert list(by_type["conflict"].marker.symbol) == ["x"]  # label 0, predicted 2
    assert {"correct prediction", "wrong prediction"} <= set(by_type)
    assert by_type["wrong prediction"].marker.color not in TYPE_COLOURS.values()
    assert "1 predicted wrong" in fig.layout.title.text


def test_embedding_axes_say_they_are_principal_components_with_their_variance() -> None:
    fig = embedding_figure(EMBEDDING)
    assert fig.layout.xaxis.title.text == "PC 1 (62% of the variance)"
    assert fig.layout.yaxis.title.text == "PC 2 (21% of the variance)"
    bare = embedding_figure({k: v for k, v in EMBEDDING.items() if k != "explained_variance"})
    assert bare.layout.xaxis.title.text == "PC 1"


def test_embedding_hover_names_index_label_prediction_type_and_dominant_modality() -> None:
    hover = embedding_figure(EMBEDDING).data[0].text[1]  # instance 2, a dominance point
    for part in ("instance 2", "label 2", "predicted 2", "correct", "type dominance",
                 "dominant modality text"):
        assert part in hover
    conflict = next(t for t in embedding_figure(EMBEDDING).data if t.name == "conflict")
    assert "wrong" in conflict.text[0] and "dominant modality none" in conflict.text[0]


def test_clicking_an_instance_map_point_links_to_that_instance_keeping_the_selection() -> None:
    click = {"points": [{"curveNumber": 0, "pointNumber": 1, "customdata": 17}]}
    assert clicked_instance_href(click, 1, 2, 3) == (
        "/instance?project=1&model=2&dataset=3&instance=17")
    assert clicked_instance_href({"points": [{"customdata": 0}]}, 1, 2, 3).endswith(
        "instance=0")
    assert clicked_instance_href(None, 1, 2, 3) is None
    assert clicked_instance_href({"points": []}, 1, 2, 3) is None
