"""ModelSpec validation and the MultimodalModel wrapper."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from estimators.model import (
    InputError,
    ModalitySpec,
    ModelSpec,
    MultimodalModel,
    apply_output,
    select_target,
)
from tests.fixtures.models import cnn_text, cnn_text_spec

DESIGN_EXAMPLE = """
{"modalities": [
   {"name": "image", "kind": "image", "shape": [1, 28, 28], "dtype": "float32",
    "display": {"mean": [0.5], "std": [0.5]}},
   {"name": "text", "kind": "text", "shape": [12], "dtype": "int64",
    "embedding": "text_encoder.embed", "vocab": ["[PAD]", "[MASK]", "is", "it", "..."],
    "pad_id": 0, "mask_id": 1},
   {"name": "ecg", "kind": "timeseries", "shape": [1, 500], "dtype": "float32",
    "display": {"sample_rate_hz": 250, "unit": "mV"}},
   {"name": "vitals", "kind": "tabular", "shape": [8], "dtype": "float32",
    "display": {"feature_names": ["HR", "SBP", "..."], "units": ["bpm", "mmHg", "..."]}}],
 "classes": ["low risk", "high risk"],
 "token_layout": [{"modality": null, "role": "cls", "start": 0, "length": 1},
                  {"modality": "image", "role": "patches", "start": 1, "length": 49,
                   "grid": [7, 7]},
                  {"modality": "text", "role": "tokens", "start": 50, "length": 12}]}
"""


def test_design_example_round_trips_through_json() -> None:
    spec = ModelSpec.model_validate_json(DESIGN_EXAMPLE)
    assert spec.names == ["image", "text", "ecg", "vitals"]
    assert spec.modality("text").is_token and not spec.modality("ecg").is_token
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec


def _spec_with(**changes: object) -> dict:
    raw = json.loads(DESIGN_EXAMPLE)
    for key, value in changes.items():
        index, field = key.split("__")
        raw["modalities"][int(index)][field] = value
    return raw


@pytest.mark.parametrize(("changes", "message"), [
    ({"0__kind": "video"}, "kind"),
    ({"1__name": "image"}, "duplicate modality names"),
    ({"1__embedding": None}, "names no 'embedding'"),
    ({"1__dtype": "float32"}, "dtype must be int64"),
    ({"0__shape": [1, 0, 28]}, "non-positive"),
    ({"3__shape": [None]}, "variable length"),
    ({"1__pad_id": 99}, "outside the vocabulary"),
    ({"0__embedding": "x.y"}, "applies only to kind 'text'"),
])
def test_invalid_specs_are_refused_with_a_clear_message(changes: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelSpec.model_validate(_spec_with(**changes))


def test_token_layout_must_name_known_modalities_and_not_overlap() -> None:
    raw = json.loads(DESIGN_EXAMPLE)
    raw["token_layout"][2]["modality"] = "audio"
    with pytest.raises(ValidationError, match="not one of"):
        ModelSpec.model_validate(raw)
    raw = json.loads(DESIGN_EXAMPLE)
    raw["token_layout"][2]["start"] = 40
    with pytest.raises(ValidationError, match="overlap"):
        ModelSpec.model_validate(raw)
    raw = json.loads(DESIGN_EXAMPLE)
    raw["token_layout"][1]["grid"] = [6, 7]
    with pytest.raises(ValidationError, match="grid"):
        ModelSpec.model_validate(raw)


def test_wrapper_returns_logits_for_valid_inputs() -> None:
    model = cnn_text()
    inputs = model.spec.example_inputs(3)
    logits = model(inputs)
    assert logits.shape == (3, 3)
    assert not model.module.training


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda x: x.pop("text"), "missing \\['text'\\]"),
    (lambda x: x.update(image=torch.zeros(3, 1, 8, 9)), "dimension 3 must be 8"),
    (lambda x: x.update(image=torch.zeros(3, 8, 8)), "4 dims"),
    (lambda x: x.update(text=torch.zeros(3, 6)), "token ids must be int64"),
    (lambda x: x.update(image=torch.zeros(3, 1, 8, 8, dtype=torch.int64)), "floating"),
    (lambda x: x.update(text=torch.zeros(2, 6, dtype=torch.int64)), "same batch size"),
])
def test_wrapper_explains_bad_inputs(mutate, message: str) -> None:
    model = cnn_text()
    inputs = model.spec.example_inputs(3)
    mutate(inputs)
    with pytest.raises(InputError, match=message):
        model(inputs)


def test_unknown_embedding_path_fails_at_wrap_time() -> None:
    spec = cnn_text_spec().model_copy(deep=True)
    bad = ModelSpec.model_validate({**spec.model_dump(), "modalities": [
        spec.modalities[0].model_dump(),
        {**spec.modalities[1].model_dump(), "embedding": "text_encoder.nope"}]})
    with pytest.raises(InputError, match=r"no submodule 'text_encoder\.nope'"):
        MultimodalModel(cnn_text().module, bad)


def test_embed_then_forward_embedded_reproduces_logits() -> None:
    model = cnn_text()
    inputs = model.spec.example_inputs(4, seed=3)
    features = model.embed(inputs)
    assert features["text"].shape == (4, 6, 8)
    assert torch.equal(features["image"], inputs["image"])
    torch.testing.assert_close(model.forward_embedded(inputs, features), model(inputs))


def test_forward_embedded_is_differentiable_in_feature_space() -> None:
    model = cnn_text()
    inputs = model.spec.example_inputs(2)
    features = {k: v.clone().requires_grad_(True) for k, v in model.embed(inputs).items()}
    model.forward_embedded(inputs, features)[:, 0].sum().backward()
    assert features["text"].grad is not None and features["text"].grad.abs().sum() > 0
    assert features["image"].grad is not None and features["image"].grad.abs().sum() > 0
    # hooks are removed afterwards: a plain forward ignores the substituted features
    torch.testing.assert_close(model(inputs), model.forward_embedded(inputs, model.embed(inputs)))


def test_output_transforms_and_target_selection() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(apply_output(logits, "softmax").sum(-1), torch.ones(2))
    torch.testing.assert_close(apply_output(logits, "log_softmax").exp(),
                               apply_output(logits, "softmax"))
    assert torch.equal(select_target(logits, 2), torch.tensor([3.0, 0.0]))
    assert torch.equal(select_target(logits, torch.tensor([0, 1])), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="output must be"):
        apply_output(logits, "probs")  # type: ignore[arg-type]


def test_example_inputs_follow_the_spec() -> None:
    spec = ModelSpec(modalities=[
        ModalitySpec(name="ecg", kind="timeseries", shape=(1, None)),
        ModalitySpec(name="note", kind="text", shape=(None,), dtype="int64", embedding="e",
                     vocab=["a", "b", "c"]),
    ], classes=["x"])
    x = spec.example_inputs(2, seq_len=5)
    assert x["ecg"].shape == (2, 1, 5) and x["ecg"].dtype == torch.float32
    assert x["note"].shape == (2, 5) and x["note"].dtype == torch.int64
    assert int(x["note"].max()) < 3
