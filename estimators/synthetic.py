"""Synthetic two-modality datasets whose PID is known exactly.

Each kind draws independent fair latent bits, lets modality ``x1`` see some of them and
``x2`` others, and sets the label from the latents (the construction of Liang et al. 2023,
"Quantifying & Modeling Multimodal Interactions", §5.1). The observed modalities are
continuous: every latent state of a modality gets a random centre in R^dim, Gaussian noise
is added, and a fixed random two-layer tanh network maps the result to the features. The maps
depend only on ``kind`` (not on ``seed``), so two seeds give a train and a test split of the
same distribution.

The **true** PID is computed by ``estimators.pid.pid`` on the exact joint of (latent state of
x1, latent state of x2, label). The noise is small against the distance between centres, so
the continuous features carry the same information as the latents; each modality also sees
one nuisance bit that is independent of everything else.

Kinds (bits): ``redundancy`` R=1 (both see the label bit); ``unique1`` U1=1 (only x1 sees
it); ``unique2`` U2=1; ``synergy`` S=1 (label = XOR of a bit seen by x1 and a bit seen by
x2); ``mixed`` R=U1=U2=S=1 (16 classes: a shared bit, a bit per modality and an XOR bit).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from estimators.pid import PIDResult, pid

KINDS = ("redundancy", "unique1", "unique2", "synergy", "mixed")
DIM = 8
NOISE = 0.1
_MAP_SEED = 20231127


@dataclass(frozen=True)
class _Design:
    """Latent bits, which modality sees which, and the bits the label is made of."""

    n_bits: int
    x1_bits: tuple[int, ...]
    x2_bits: tuple[int, ...]
    label: tuple[tuple[int, ...], ...]   # label bit k = XOR of these latent bits
    label_names: tuple[str, ...]
    description: str


# Latent bit order: 0 shared/label, then extra bits; the last two are the nuisance bits.
_DESIGNS: dict[str, _Design] = {
    "redundancy": _Design(3, (0, 1), (0, 2), ((0,),), ("z",),
                          "both modalities see the label bit z: all information is redundant"),
    "unique1": _Design(4, (0, 2), (1, 3), ((0,),), ("a",),
                       "only x1 sees the label bit a; x2 sees an unrelated bit"),
    "unique2": _Design(4, (1, 2), (0, 3), ((0,),), ("b",),
                       "only x2 sees the label bit b; x1 sees an unrelated bit"),
    "synergy": _Design(4, (0, 2), (1, 3), ((0, 1),), ("a xor b",),
                       "label = a XOR b with a seen by x1 and b by x2: only together informative"),
    "mixed": _Design(7, (0, 1, 3, 5), (0, 2, 4, 6), ((0,), (1,), (2,), (3, 4)),
                     ("r", "u", "v", "s1 xor s2"),
                     "label = (r, u, v, s1 XOR s2): r shared, u in x1 only, v in x2 only, "
                     "s1 in x1 and s2 in x2; one bit of each interaction"),
}


def _states(bits: np.ndarray, which: tuple[int, ...]) -> np.ndarray:
    """Integer code of the selected latent bits (little-endian), one per row."""
    weights = 1 << np.arange(len(which))
    return bits[:, list(which)] @ weights


def _labels(bits: np.ndarray, design: _Design) -> np.ndarray:
    label_bits = np.stack([np.bitwise_xor.reduce(bits[:, list(group)], axis=1)
                           for group in design.label], axis=1)
    return label_bits @ (1 << np.arange(len(design.label)))


@functools.cache
def true_pid(kind: str) -> tuple[PIDResult, np.ndarray]:
    """Exact PID of ``kind`` and the joint ``p[x1 state, x2 state, label]`` it comes from."""
    design = _design(kind)
    bits = np.array(list(itertools.product((0, 1), repeat=design.n_bits)), dtype=np.int64)
    s1, s2 = _states(bits, design.x1_bits), _states(bits, design.x2_bits)
    y = _labels(bits, design)
    p = np.zeros((1 << len(design.x1_bits), 1 << len(design.x2_bits), 1 << len(design.label)))
    np.add.at(p, (s1, s2, y), 1.0 / len(bits))
    return pid(p), p


def _design(kind: str) -> _Design:
    if kind not in _DESIGNS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    return _DESIGNS[kind]


def _feature_map(kind: str, modality: int, n_states: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed random centres ``[n_states, DIM]`` and tanh-network weights for one modality."""
    rng = np.random.default_rng([_MAP_SEED, KINDS.index(kind), modality])
    centres = rng.normal(size=(n_states, DIM))
    w1 = rng.normal(size=(DIM, 2 * DIM)) / np.sqrt(DIM)
    w2 = rng.normal(size=(2 * DIM, DIM)) / np.sqrt(2 * DIM)
    return centres, w1, w2


def _observe(states: np.ndarray, kind: str, modality: int, n_states: int,
             rng: np.random.Generator) -> np.ndarray:
    centres, w1, w2 = _feature_map(kind, modality, n_states)
    h = centres[states] + NOISE * rng.normal(size=(len(states), DIM))
    return np.tanh(np.tanh(h @ w1) @ w2 * 2.0)


def make_dataset(kind: str, n: int, *, seed: int) -> dict[str, Any]:
    """``n`` samples of synthetic dataset ``kind`` with its exact PID.

    Returns ``{"inputs": {"x1": float32 [n, 8], "x2": float32 [n, 8]}, "labels": int64 [n],
    "pid": PIDResult (true, bits), "latents": {"x1": int [n], "x2": int [n]} (the latent
    state each modality sees), "p": the exact joint [x1 state, x2 state, label],
    "classes": label names, "description": str, "kind": kind}``.
    """
    design = _design(kind)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(n, design.n_bits))
    s1, s2 = _states(bits, design.x1_bits), _states(bits, design.x2_bits)
    y = _labels(bits, design)
    x1 = _observe(s1, kind, 1, 1 << len(design.x1_bits), rng)
    x2 = _observe(s2, kind, 2, 1 << len(design.x2_bits), rng)
    truth, p = true_pid(kind)
    classes = [", ".join(f"{name}={(c >> k) & 1}" for k, name in enumerate(design.label_names))
               for c in range(1 << len(design.label))]
    return {
        "inputs": {"x1": torch.from_numpy(x1.astype(np.float32)),
                   "x2": torch.from_numpy(x2.astype(np.float32))},
        "labels": torch.from_numpy(y.astype(np.int64)),
        "pid": truth,
        "latents": {"x1": s1, "x2": s2},
        "p": p,
        "classes": classes,
        "description": design.description,
        "kind": kind,
    }
