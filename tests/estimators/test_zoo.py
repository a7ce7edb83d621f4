"""The zoo's architectures and registry: round trips, strict loading, plugins, structure."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch.func import jacfwd, jacrev

from estimators.model import ModalitySpec, ModelSpec, MultimodalModel
from estimators.zoo import registry
from estimators.zoo.architectures import (
    ARCHITECTURES,
    embedding_path,
    modality_params,
    token_layout,
)
from estimators.zoo.encoders import Standardise

VOCAB = ["[PAD]", "[MASK]", "is", "it", "seven", "even", "odd", "big"]


def four_kind_spec() -> ModelSpec:
    return ModelSpec(
        modalities=[
            ModalitySpec(name="image", kind="image", shape=(1, 8, 8)),
            ModalitySpec(name="text", kind="text", shape=(5,), dtype="int64",
                         embedding=embedding_path("text"), vocab=VOCAB, pad_id=0, mask_id=1),
            ModalitySpec(name="ecg", kind="timeseries", shape=(1, 40)),
            ModalitySpec(name="vitals", kind="tabular", shape=(3,)),
        ],
        classes=["a", "b", "c"],
    )


def params_for(spec: ModelSpec, **extra) -> dict:
    return {"modalities": modality_params(spec), "n_classes": spec.n_classes, "dim": 16,
            "timeseries_patch": 8, "seed": 3, **extra}


def built(architecture: str, spec: ModelSpec | None = None, **extra) -> MultimodalModel:
    spec = spec or four_kind_spec()
    return MultimodalModel(registry.build(architecture, params_for(spec, **extra)), spec)


def test_registry_lists_the_four_zoo_architectures() -> None:
    assert set(ARCHITECTURES) <= set(registry.available())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_round_trips_through_safetensors_and_config(
        architecture: str, tmp_path: Path) -> None:
    spec = four_kind_spec()
    params = params_for(spec)
    module = registry.build(architecture, params)
    for sub in module.modules():          # non-default buffers must travel with the weights
        if isinstance(sub, Standardise):
            sub.loc.fill_(2.5)
            sub.scale.fill_(4.0)
    config_path, weights_path = registry.save_model(module, architecture, params, spec,
                                                    tmp_path, "m")
    loaded = registry.load_model(config_path, weights_path)
    inputs = spec.example_inputs(4, seed=1)
    with torch.no_grad():
        assert torch.equal(MultimodalModel(module, spec)(inputs), loaded(inputs))
    assert loaded.spec == spec
    config = json.loads(config_path.read_text())
    assert set(config) == {"architecture", "params", "spec"}
    assert registry.load_model(config, weights_path).spec == spec


def test_same_seed_builds_identical_weights_without_touching_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = registry.build("transformer", params_for(four_kind_spec()))
    after = torch.rand(1)
    b = registry.build("transformer", params_for(four_kind_spec()))
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_load_model_names_the_keys_whose_shape_differs(tmp_path: Path) -> None:
    spec = four_kind_spec()
    module = registry.build("early_fusion", params_for(spec, dim=16))
    _, weights = registry.save_model(module, "early_fusion", params_for(spec), spec,
                                     tmp_path, "m")
    config = {"architecture": "early_fusion", "params": params_for(spec, dim=8),
              "spec": spec.model_dump(mode="json")}
    with pytest.raises(registry.ConfigError, match=r"wrong shape encoders\.ecg\.net\.6\.bias: "
                                                   r"file \[16\], model \[8\]"):
        registry.load_model(config, weights)


def test_load_model_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    spec = four_kind_spec()
    config_path, weights = registry.save_model(
        registry.build("late_fusion", params_for(spec)), "late_fusion", params_for(spec),
        spec, tmp_path, "m")
    state = safetensors.torch.load_file(str(weights))
    state["surplus"] = state.pop("heads.text.2.bias")
    safetensors.torch.save_file(state, str(weights))
    with pytest.raises(registry.ConfigError, match=r"missing heads\.text\.2\.bias.*"
                                                   r"unexpected surplus"):
        registry.load_model(config_path, weights)


def test_load_model_refuses_a_pickle_file_as_weights(tmp_path: Path) -> None:
    spec = four_kind_spec()
    module = registry.build("late_fusion", params_for(spec))
    config_path, _ = registry.save_model(module, "late_fusion", params_for(spec), spec,
                                         tmp_path, "m")
    pickled = tmp_path / "m.pt"
    torch.save(module.state_dict(), pickled)
    with pytest.raises(registry.ConfigError, match="safetensors"):
        registry.load_model(config_path, pickled)


def test_config_errors_say_what_is_missing() -> None:
    with pytest.raises(registry.ConfigError, match=r"lacks \['params'\]"):
        registry.read_config({"architecture": "late_fusion", "spec": {}})
    with pytest.raises(registry.ConfigError, match="not a valid ModelSpec"):
        registry.read_config({"architecture": "late_fusion", "params": {}, "spec": {}})
    with pytest.raises(registry.ConfigError, match="rejected its params"):
        registry.build("late_fusion", {"n_classes": 2})


def test_unknown_architecture_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown architecture 'nope'.*late_fusion"):
        registry.build("nope", {})


def test_registering_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register("late_fusion")(lambda params: torch.nn.Identity())


def test_plugin_architectures_come_from_the_entry_point_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zoo_test_plugin.py").write_text(textwrap.dedent("""
        import torch

        class Sum(torch.nn.Module):
            def __init__(self, n_classes):
                super().__init__()
                self.scale = torch.nn.Parameter(torch.ones(n_classes))

            def forward(self, a, b):
                return (a.sum(-1, keepdim=True) + b.sum(-1, keepdim=True)) * self.scale

        def make(params):
            return Sum(params["n_classes"])
    """))
    dist = tmp_path / "zoo_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-test-plugin\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text("[crosslens.models]\nsummer = zoo_test_plugin:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "summer" in registry.available()
    spec = ModelSpec(modalities=[ModalitySpec(name="a", kind="tabular", shape=(2,)),
                                 ModalitySpec(name="b", kind="tabular", shape=(2,))],
                     classes=["x", "y"])
    config_path, weights = registry.save_model(registry.build("summer", {"n_classes": 2}),
                                               "summer", {"n_classes": 2}, spec, tmp_path, "p")
    model = registry.load_model(config_path, weights)
    out = model({"a": torch.ones(1, 2), "b": torch.ones(1, 2)})
    assert torch.equal(out, torch.full((1, 2), 4.0))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_forward_is_fuse_of_per_modality_encodings(architecture: str) -> None:
    """The contract EMAP's cached path relies on: encoders see one modality each."""
    model = built(architecture)
    inputs = model.spec.example_inputs(3, seed=2)
    module = model.module
    with torch.no_grad():
        encodings = {n: module.encoders[n](inputs[n]) for n in model.spec.names}
        assert torch.equal(module.fuse(encodings), model(inputs))


def cross_block(model: MultimodalModel, a: str, b: str) -> torch.Tensor:
    """d²f_0 / dx_a dx_b in feature space for instance 0, by forward-over-reverse."""
    inputs = model.spec.example_inputs(1, seed=4)
    features = model.embed(inputs)

    def f(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return model.forward_embedded(inputs, {**features, a: xa, b: xb})[0, 0]

    return jacfwd(jacrev(f, argnums=0), argnums=1)(features[a], features[b])


@pytest.mark.parametrize(("a", "b"), [("image", "text"), ("ecg", "vitals"), ("text", "vitals")])
def test_late_fusion_has_an_exactly_zero_cross_modal_hessian(a: str, b: str) -> None:
    block = cross_block(built("late_fusion"), a, b)
    assert block.numel() > 0
    assert torch.count_nonzero(block) == 0


@pytest.mark.parametrize("architecture", ["early_fusion", "tensor_fusion", "transformer"])
def test_fusing_architectures_have_cross_modal_interactions(architecture: str) -> None:
    assert cross_block(built(architecture), "image", "text").abs().max() > 1e-6


def test_transformer_hessian_agrees_between_forward_and_reverse_mode() -> None:
    """Attention must not route through a kernel without forward-mode AD."""
    model = built("transformer")
    inputs = model.spec.example_inputs(1, seed=5)
    features = model.embed(inputs)

    def f(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return model.forward_embedded(inputs, {**features, "vitals": xa, "text": xb})[0, 1]

    fwd = jacfwd(jacrev(f, argnums=0), argnums=1)(features["vitals"], features["text"])
    rev = jacrev(jacrev(f, argnums=0), argnums=1)(features["vitals"], features["text"])
    torch.testing.assert_close(fwd, rev, atol=1e-6, rtol=1e-4)


def test_transformer_token_layout_covers_its_attention_sequence() -> None:
    spec = four_kind_spec()
    params = params_for(spec)
    model = MultimodalModel(registry.build("transformer", params), spec)
    seen: list[tuple[int, ...]] = []
    attn = model.module.blocks[0].attn
    handle = attn.register_forward_hook(lambda _m, _a, out: seen.append(tuple(out[1].shape)))
    with torch.no_grad():
        model(spec.example_inputs(2))
    handle.remove()
    layout = token_layout(params)
    n_tokens = max(seg.stop for seg in layout)
    heads = params.get("heads", 4)
    assert seen == [(2, heads, n_tokens, n_tokens)]
    by_modality = {seg.modality: seg for seg in layout}
    assert by_modality["image"].grid == (4, 4)
    assert by_modality["text"].length == 5
    assert by_modality["ecg"].length == 40 // params["timeseries_patch"]
    assert by_modality["vitals"].length == 3
    ModelSpec.model_validate({**spec.model_dump(), "token_layout": layout})


def test_text_modalities_are_attributed_at_the_documented_embedding() -> None:
    for architecture in ARCHITECTURES:
        model = built(architecture)
        assert isinstance(model.embedding_module("text"), torch.nn.Embedding)
        assert model.embed(model.spec.example_inputs(2))["text"].shape == (2, 5, 16)


def test_zoo_models_use_no_relu() -> None:
    for architecture in ARCHITECTURES:
        kinds = {type(m) for m in built(architecture).modules()}
        assert not kinds & {torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU,
                            torch.nn.MaxPool1d, torch.nn.MaxPool2d}


def test_transformer_reads_out_the_named_modality_tokens() -> None:
    """With no attention layers, a text readout sees the text and nothing else."""
    model = built("transformer", layers=0, readout="text")
    inputs = model.spec.example_inputs(2, seed=6)
    other = model.spec.example_inputs(2, seed=7)
    with torch.no_grad():
        base = model(inputs)
        assert torch.equal(base, model({**other, "text": inputs["text"]}))
        assert not torch.equal(base, model({**inputs, "text": other["text"]}))
    with pytest.raises(registry.ConfigError, match="readout must be 'cls' or one of"):
        built("transformer", readout="sound")
