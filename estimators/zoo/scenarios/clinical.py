"""Clinical triage (SYNTHETIC): vitals/labs + a 4-second ECG + a triage note -> risk.

Everything here is generated; no patient data is involved. Each synthetic patient is drawn
from one of ten *case types* built so that the modalities play different roles:

- decided by one modality: ST elevation on the ECG, shock on the vitals (low blood
  pressure, high lactate), stroke signs in the note -> high risk whatever the others say;
- needs two that agree: atrial fibrillation on the ECG *and* breathlessness in the note,
  or a raised troponin *and* chest pain in the note -> high risk; either alone -> low risk;
- conflicting signals: an alarming note ("chest pain") with a normal ECG and normal labs ->
  low risk; an ST elevation or shock with a routine note -> high risk.

The ECG is a sum of Gaussian P-QRS-T waves per beat (McSharry et al. 2003 style) at the
patient's heart rate, with no P waves and irregular beat intervals plus fibrillatory baseline
in atrial fibrillation, a raised ST segment for ST elevation, baseline wander and noise.
The case type of every patient is the suffix of its id (``P0042-st_elevation``).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from scipy.special import expit

from estimators.data import MultimodalDataset
from estimators.model import ModalitySpec, ModelSpec
from estimators.zoo.architectures import embedding_path
from estimators.zoo.scenarios.base import Recipe, Scenario, split_indices

SEED = 7
N_PATIENTS = 4000
SAMPLE_RATE_HZ = 125
ECG_SECONDS = 4
ECG_LENGTH = SAMPLE_RATE_HZ * ECG_SECONDS
NOTE_LENGTH = 10

FEATURES = ["heart rate", "systolic BP", "SpO2", "temperature", "respiratory rate",
            "troponin", "lactate", "age"]
UNITS = ["bpm", "mmHg", "%", "°C", "/min", "ng/L", "mmol/L", "years"]

NOTES: dict[str, list[str]] = {
    "routine": ["medication refill", "follow up visit after surgery", "mild cough no fever",
                "routine check of blood pressure"],
    "vague": ["feeling unwell since yesterday", "tired and dizzy this morning",
              "nausea since this morning", "fall at home no injury", "mild headache"],
    "chest": ["chest pain radiating to left arm", "chest pain and sweating",
              "pressure in chest since this morning", "chest pain on exertion"],
    "dyspnea": ["short of breath on exertion", "short of breath since yesterday",
                "cough and short of breath", "breathless lying flat"],
    "stroke": ["sudden facial droop and slurred speech", "sudden weakness of left arm",
               "slurred speech since this morning", "confused with facial droop"],
}
VOCAB = ["[PAD]", "[MASK]", *sorted({w for notes in NOTES.values() for n in notes
                                     for w in n.split()})]

# case type: (probability, label, ECG rhythm, vitals profile, note categories + weights)
CASES: dict[str, tuple[float, int, str, str, dict[str, float]]] = {
    "routine": (0.18, 0, "sinus", "normal", {"routine": 0.5, "vague": 0.5}),
    "st_elevation": (0.10, 1, "st", "normal", {"chest": 0.5, "vague": 0.3, "routine": 0.2}),
    "shock": (0.10, 1, "tachy", "shock", {"vague": 0.5, "dyspnea": 0.2, "routine": 0.3}),
    "stroke": (0.10, 1, "sinus", "normal", {"stroke": 1.0}),
    "afib_dyspnea": (0.10, 1, "afib", "breathless", {"dyspnea": 1.0}),
    "afib_only": (0.08, 0, "afib", "normal", {"routine": 0.6, "vague": 0.4}),
    "dyspnea_only": (0.07, 0, "sinus", "breathless", {"dyspnea": 1.0}),
    "troponin_chest_pain": (0.10, 1, "sinus", "troponin", {"chest": 1.0}),
    "troponin_only": (0.07, 0, "sinus", "troponin", {"routine": 0.5, "vague": 0.5}),
    "chest_pain_only": (0.10, 0, "sinus", "normal", {"chest": 1.0}),
}


def _vitals(profile: np.ndarray, rhythm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[N, 8] vitals/labs in display units; profiles shift the relevant ones."""
    n = profile.size
    shock, breathless = profile == "shock", profile == "breathless"
    hr = rng.normal(76, 10, n)
    hr = np.where(rhythm == "afib", rng.normal(108, 15, n), hr)
    hr = np.where(rhythm == "st", rng.normal(86, 14, n), hr)
    hr = np.where(shock, rng.normal(120, 12, n), hr)
    sbp = np.where(shock, rng.normal(84, 9, n), rng.normal(130, 16, n))
    spo2 = np.where(shock | breathless, rng.normal(93.5, 2.2, n), rng.normal(97.5, 1.2, n))
    temp = np.where(shock, rng.normal(38.3, 0.9, n), rng.normal(36.9, 0.4, n))
    resp = np.where(shock, rng.normal(26, 4, n),
                    np.where(breathless, rng.normal(22, 3, n), rng.normal(16, 2.5, n)))
    troponin = np.exp(np.where(profile == "troponin", rng.normal(np.log(55), 0.5, n),
                               np.where(rhythm == "st", rng.normal(np.log(12), 0.6, n),
                                        rng.normal(np.log(6), 0.5, n))))
    lactate = np.where(shock, rng.normal(4.6, 1.3, n), rng.normal(1.2, 0.4, n))
    age = rng.uniform(25, 92, n)
    out = np.stack([hr, sbp, np.minimum(spo2, 100), temp, resp, troponin,
                    np.maximum(lactate, 0.3), age], axis=1)
    return np.round(out, 1)


def _ecg(rhythm: np.ndarray, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[N, L] single-lead ECG in mV: a per-patient P-QRS-T beat template (Gaussian waves)
    placed at every beat time (a convolution with the beat impulse train, done by FFT)."""
    n, max_beats = rhythm.size, 16
    rr = 60.0 / np.clip(hr, 40, 180)
    jitter = np.where(rhythm[:, None] == "afib", rng.uniform(-0.35, 0.35, (n, max_beats)),
                      rng.normal(0, 0.02, (n, max_beats)))
    beats = (np.cumsum(rr[:, None] * (1 + jitter), axis=1)
             - rng.uniform(1.0, 2.0, n)[:, None] * rr[:, None])

    # beat template on [-0.3 s, 0.9 s) around the R peak
    lead = int(0.3 * SAMPLE_RATE_HZ)
    dt = (np.arange(int(1.2 * SAMPLE_RATE_HZ)) - lead)[None, :] / SAMPLE_RATE_HZ
    has_p = (rhythm != "afib")[:, None].astype(float)
    st = np.where(rhythm == "st", rng.uniform(0.2, 0.45, n), 0.0)[:, None]
    t_centre = 0.2 + 0.1 * np.sqrt(rr)[:, None]

    def wave(centre: float | np.ndarray, amp: float | np.ndarray, width: float) -> np.ndarray:
        return amp * np.exp(-0.5 * ((dt - centre) / width) ** 2)

    template = (wave(-0.16, 0.15 * has_p, 0.025) + wave(-0.035, -0.12, 0.01)
                + wave(0.0, 1.1, 0.012) + wave(0.035, -0.3, 0.012) + wave(t_centre, 0.3, 0.05)
                + st * expit((dt - 0.05) / 0.01) * expit(-(dt - t_centre) / 0.03))
    template *= rng.uniform(0.8, 1.25, n)[:, None]

    # impulse train shifted by `lead` so output sample i holds the template at i - beat
    width = ECG_LENGTH + template.shape[1]
    impulses = np.zeros((n, width))
    index = np.rint(beats * SAMPLE_RATE_HZ).astype(int) + lead
    rows = np.repeat(np.arange(n), max_beats)
    keep = ((index >= 0) & (index < width)).ravel()
    np.add.at(impulses, (rows[keep], index.ravel()[keep]), 1.0)
    size = 2 * width
    ecg = np.fft.irfft(np.fft.rfft(impulses, size) * np.fft.rfft(template, size), size)
    ecg = ecg[:, 2 * lead:2 * lead + ECG_LENGTH]

    t = np.arange(ECG_LENGTH) / SAMPLE_RATE_HZ
    fib = np.where(rhythm == "afib", 0.05, 0.0)[:, None] * np.sin(
        2 * np.pi * rng.uniform(5, 7, n)[:, None] * t + rng.uniform(0, 2 * np.pi, n)[:, None])
    wander = 0.08 * np.sin(2 * np.pi * rng.uniform(0.15, 0.4, n)[:, None] * t
                           + rng.uniform(0, 2 * np.pi, n)[:, None])
    return ecg + fib + wander + rng.normal(0, 0.02, (n, ECG_LENGTH))


@cache
def _all() -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    rng = np.random.default_rng(SEED)
    names = list(CASES)
    case = np.array(names)[rng.choice(len(names), N_PATIENTS,
                                      p=[CASES[c][0] for c in names])]
    label = np.array([CASES[c][1] for c in case])
    rhythm = np.array([CASES[c][2] for c in case])
    profile = np.array([CASES[c][3] for c in case])
    vitals = _vitals(profile, rhythm, rng)
    ecg = _ecg(rhythm, vitals[:, 0], rng)
    token = {w: i for i, w in enumerate(VOCAB)}
    note_ids = np.zeros((N_PATIENTS, NOTE_LENGTH), dtype=np.int64)
    draws = rng.random(N_PATIENTS)
    for i, c in enumerate(case):
        categories = CASES[c][4]
        category = list(categories)[int(np.searchsorted(np.cumsum(list(categories.values())),
                                                        draws[i] * 0.999999))]
        words = NOTES[category][rng.integers(len(NOTES[category]))].split()
        note_ids[i, :len(words)] = [token[w] for w in words]
    inputs = {"vitals": torch.tensor(vitals, dtype=torch.float32),
              "ecg": torch.tensor(ecg, dtype=torch.float32).unsqueeze(1),
              "note": torch.from_numpy(note_ids)}
    ids = [f"P{i:04d}-{c}" for i, c in enumerate(case)]
    return inputs, torch.from_numpy(label), ids


def generate(split: str) -> MultimodalDataset:
    inputs, labels, ids = _all()
    rows = torch.from_numpy(split_indices(N_PATIENTS, 0.25, SEED)[split])
    return MultimodalDataset({k: v[rows] for k, v in inputs.items()}, labels[rows],
                             [ids[i] for i in rows.tolist()])


SPEC = ModelSpec(
    modalities=[
        ModalitySpec(name="vitals", kind="tabular", shape=(len(FEATURES),),
                     display={"feature_names": FEATURES, "units": UNITS,
                              "caption": "vital signs and lab values (synthetic)"}),
        ModalitySpec(name="ecg", kind="timeseries", shape=(1, ECG_LENGTH),
                     display={"sample_rate_hz": SAMPLE_RATE_HZ, "unit": "mV",
                              "channel_names": ["lead II"],
                              "caption": "4-second single-lead ECG (synthetic)"}),
        ModalitySpec(name="note", kind="text", shape=(NOTE_LENGTH,), dtype="int64",
                     embedding=embedding_path("note"), vocab=VOCAB, pad_id=0, mask_id=1,
                     display={"caption": "triage note (synthetic)"}),
    ],
    classes=["low risk", "high risk"],
)

SCENARIO = Scenario(
    name="clinical-triage",
    title="Clinical triage (SYNTHETIC data)",
    description=(
        "SYNTHETIC DEMO - no real patients. Each made-up patient has vital signs and lab "
        "values, a 4-second heart trace (ECG) and a short triage note, and is labelled low "
        "or high risk. Some patients are decided by one source alone (a raised ST segment on "
        "the ECG, very low blood pressure, stroke signs in the note), some only when two "
        "sources agree (an irregular heartbeat together with breathlessness; a raised "
        "troponin together with chest pain), and some have sources that disagree (an "
        "alarming note with a normal heart trace and normal labs). The patient id ends with "
        "the case type it was generated from."),
    spec=SPEC,
    generate=generate,
    recipes=(
        Recipe("transformer", "transformer",
               {"dim": 32, "heads": 4, "layers": 2, "mlp": 64, "timeseries_patch": 20,
                "seed": 0}, epochs=8, lr=4e-3, batch_size=128),
        Recipe("early_fusion", "early_fusion", {"dim": 32, "hidden": 64, "seed": 0},
               epochs=8, lr=5e-3, batch_size=128),
        Recipe("tensor_fusion", "tensor_fusion", {"dim": 32, "hidden": 64, "rank": 4, "seed": 0},
               epochs=8, lr=5e-3, batch_size=128),
        Recipe("late_fusion", "late_fusion", {"dim": 32, "hidden": 64, "seed": 0},
               epochs=8, lr=5e-3, batch_size=128),
    ),
)
