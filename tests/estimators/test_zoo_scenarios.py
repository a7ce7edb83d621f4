"""Demo scenarios: deterministic data, shipped weights that reach their recorded accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend.cli import main as crosslens
from estimators.data import MultimodalDataset
from estimators.zoo.scenarios import (
    Recipe,
    Scenario,
    clinical,
    clinical_minilm,
    digits,
    get_scenario,
    interactions,
    list_scenarios,
)
from estimators.zoo.train import accuracy, train_scenario

SCENARIOS = list_scenarios()
SHIPPED = [(s, m) for s in SCENARIOS for m in s.models]


def clear_generator_caches() -> None:
    digits._all.cache_clear()
    clinical._all.cache_clear()
    interactions._split.cache_clear()
    for cached in (clinical_minilm._notes, clinical_minilm._pieces,
                   clinical_minilm._vocabulary, clinical_minilm._note_ids):
        cached.cache_clear()


def assert_same(a: MultimodalDataset, b: MultimodalDataset) -> None:
    assert a.ids == b.ids
    assert torch.equal(a.labels, b.labels)
    assert a.names == b.names
    for name in a.names:
        assert torch.equal(a.inputs[name], b.inputs[name])


def test_scenarios_cover_the_three_demos_with_unique_names() -> None:
    names = [s.name for s in SCENARIOS]
    assert len(set(names)) == len(names)
    assert {"digits-question", "clinical-triage", "synthetic-synergy",
            "synthetic-redundancy"} <= set(names)
    assert get_scenario("digits-question").title == "Digits + question"
    with pytest.raises(KeyError, match="available"):
        get_scenario("nope")


def test_the_clinical_scenario_says_it_is_synthetic() -> None:
    scenario = get_scenario("clinical-triage")
    assert "SYNTHETIC" in scenario.title
    assert scenario.description.startswith("SYNTHETIC")
    for m in scenario.spec.modalities:
        assert "synthetic" in m.display["caption"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_generators_regenerate_identical_disjoint_splits(scenario: Scenario) -> None:
    test, train, everything = (scenario.dataset(s) for s in ("test", "train", "all"))
    clear_generator_caches()
    assert_same(test, scenario.dataset("test"))
    assert not set(test.ids) & set(train.ids)
    assert sorted(test.ids + train.ids) == sorted(everything.ids)
    for m in scenario.spec.modalities:      # data fit the spec the models are built from
        x = test.inputs[m.name]
        assert tuple(x.shape[1:]) == m.shape and x.dtype == m.torch_dtype
        if m.is_token:
            assert int(x.max()) < len(m.vocab)
    with pytest.raises(ValueError, match="split must be one of"):
        scenario.dataset("validation")


@pytest.mark.parametrize(("scenario", "model"), SHIPPED,
                         ids=[f"{s.name}/{m.name}" for s, m in SHIPPED])
def test_shipped_weights_reach_the_recorded_accuracy(scenario: Scenario, model) -> None:
    loaded = model.load()
    recipe = next(r for r in scenario.recipes if r.name == model.name)
    assert loaded.spec == scenario.model_spec(recipe)
    assert loaded.spec.classes == scenario.spec.classes
    assert accuracy(loaded, scenario.dataset("test")) == pytest.approx(model.test_accuracy,
                                                                        abs=0.005)


def test_every_scenario_ships_all_four_architectures() -> None:
    """All but the pretrained-encoder demo, which adds one model on top of a frozen MiniLM."""
    for scenario in SCENARIOS:
        if scenario.name == clinical_minilm.NAME:
            assert [m.architecture for m in scenario.models] == ["pretrained_text_fusion"]
            continue
        assert sorted(m.architecture for m in scenario.models) == sorted(
            ["late_fusion", "early_fusion", "tensor_fusion", "transformer"]), scenario.name


def test_interaction_needing_tasks_defeat_the_additive_model() -> None:
    for name in ("digits-question", "synthetic-synergy"):
        acc = {m.architecture: m.test_accuracy for m in get_scenario(name).models}
        assert acc["late_fusion"] < 0.7 < 0.9 < min(acc["early_fusion"], acc["tensor_fusion"],
                                                    acc["transformer"])
    redundant = {m.architecture: m.test_accuracy
                 for m in get_scenario("synthetic-redundancy").models}
    assert min(redundant.values()) > 0.95


def test_digit_questions_are_answered_correctly() -> None:
    import numpy as np

    kind = np.array(["even", "odd", "equal", "equal", "greater", "less", "multiple",
                     "multiple"])
    number = np.array([0, 0, 7, 3, 5, 5, 3, 3])
    digit = np.array([4, 4, 7, 7, 5, 2, 9, 4])
    assert digits.answers(kind, number, digit).tolist() == [1, 0, 1, 0, 0, 1, 1, 0]
    data = get_scenario("digits-question").dataset("test")
    words = [digits.VOCAB[i] for i in data.inputs["text"][0].tolist() if i != 0]
    assert words[:2] == ["is", "it"]
    assert 0.35 < data.labels.float().mean() < 0.65


def test_clinical_patients_cover_every_case_type_with_balanced_risk() -> None:
    data = get_scenario("clinical-triage").dataset("all")
    cases = {i.split("-", 1)[1] for i in data.ids}
    assert cases == set(clinical.CASES)
    assert 0.4 < data.labels.float().mean() < 0.6
    vitals = get_scenario("clinical-triage").spec.modality("vitals")
    assert len(vitals.display["feature_names"]) == len(vitals.display["units"]) == 8
    high_risk = torch.tensor([clinical.CASES[i.split("-", 1)[1]][1] for i in data.ids])
    assert torch.equal(high_risk, data.labels)


def test_training_is_deterministic_and_writes_a_reloadable_manifest(tmp_path: Path) -> None:
    """A tiny scenario (2 epochs on 200 samples): same weights twice, manifest is right."""
    source = get_scenario("synthetic-unique1")

    def small(split: str) -> MultimodalDataset:
        data = source.dataset(split)
        return data.subset(range(200 if split == "train" else 100))

    tiny = Scenario(name="tiny", title="tiny", description="tiny", spec=source.spec,
                    generate=small, weights_dir=tmp_path / "a",
                    recipes=(Recipe("late", "late_fusion", {"dim": 4, "hidden": 8},
                                    epochs=2, batch_size=50),
                             Recipe("attn", "transformer", {"dim": 4, "heads": 1, "layers": 1},
                                    epochs=2, batch_size=50)))
    entries = train_scenario(tiny, log=lambda _line: None)
    again = train_scenario(tiny, tmp_path / "b", log=lambda _line: None)
    assert [e["test_accuracy"] for e in entries] == [e["test_accuracy"] for e in again]
    for name in ("late", "attn"):
        a = (tmp_path / "a" / "tiny" / f"{name}.safetensors").read_bytes()
        assert a == (tmp_path / "b" / "tiny" / f"{name}.safetensors").read_bytes()
    manifest = json.loads((tmp_path / "a" / "tiny" / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["late", "attn"]
    for model in tiny.models:
        assert accuracy(model.load(), small("test")) == pytest.approx(model.test_accuracy,
                                                                      abs=1e-4)


def test_demo_list_prints_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert crosslens(["demo", "list"]) == 0
    out = capsys.readouterr().out
    for scenario in SCENARIOS:
        assert scenario.name in out


def test_demo_train_rejects_an_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert crosslens(["demo", "train", "--scenario", "nope", "--out", "/nonexistent"]) == 2
    assert "unknown scenario" in capsys.readouterr().err
