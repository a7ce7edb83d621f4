"""BROJA PID: canonical distributions, identities, edge cases, agreement with dit's cone
solver, estimators from samples and model PID."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from estimators.data import MultimodalDataset
from estimators.model import ModalitySpec, ModelSpec, MultimodalModel
from estimators.pid import (
    PIDResult,
    dataset_pid,
    discretize,
    model_pid,
    pid,
    pid_from_samples,
)


def _table(rule, n1: int = 2, n2: int = 2, ny: int = 2) -> np.ndarray:
    """Uniform (x1, x2) with y = rule(x1, x2)."""
    p = np.zeros((n1, n2, ny))
    for a, b in itertools.product(range(n1), range(n2)):
        p[a, b, rule(a, b)] = 1.0 / (n1 * n2)
    return p


def _redundant_bit() -> np.ndarray:
    p = np.zeros((2, 2, 2))
    p[0, 0, 0] = p[1, 1, 1] = 0.5
    return p


CANONICAL = {
    # name: (p, [R, U1, U2, S]) in bits (Bertschinger et al. 2014, Table 1; Griffith & Koch)
    "xor": (_table(lambda a, b: a ^ b), [0, 0, 0, 1]),
    "and": (_table(lambda a, b: a & b), [0.311278124459133, 0, 0, 0.5]),
    "redundant copy": (_redundant_bit(), [1, 0, 0, 0]),
    "y = x1": (_table(lambda a, b: a), [0, 1, 0, 0]),
    "y = x2": (_table(lambda a, b: b), [0, 0, 1, 0]),
    "copy of two bits": (_table(lambda a, b: 2 * a + b, ny=4), [0, 1, 1, 0]),
    "independent y": (np.full((2, 2, 2), 1 / 8), [0, 0, 0, 0]),
}


@pytest.mark.parametrize("name", list(CANONICAL))
def test_canonical_distributions_have_known_atoms(name: str) -> None:
    p, expected = CANONICAL[name]
    result = pid(p)
    np.testing.assert_allclose(result.atoms(), expected, atol=1e-8)
    assert result.gap < 1e-8


def _assert_identities(p: np.ndarray, r: PIDResult) -> None:
    """R+U1+U2+S = I(X1,X2;Y), R+U1 = I(X1;Y), R+U2 = I(X2;Y), all atoms >= 0."""
    def mi(joint: np.ndarray) -> float:
        joint = joint.reshape(-1, joint.shape[-1])
        outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
        nz = joint > 0
        return float((joint[nz] * np.log2(joint[nz] / outer[nz])).sum())

    tol = 1e-7 + r.gap
    assert np.all(r.atoms() >= -1e-9)
    assert abs(r.atoms().sum() - r.total) < tol
    assert abs(r.total - mi(p)) < 1e-9
    assert abs(r.redundancy + r.unique1 - mi(p.sum(1))) < tol
    assert abs(r.redundancy + r.unique2 - mi(p.sum(0))) < tol


count_tables = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4)).flatmap(
    lambda shape: st.lists(st.integers(0, 30), min_size=int(np.prod(shape)),
                           max_size=int(np.prod(shape))).map(
        lambda counts: np.array(counts, dtype=float).reshape(shape))
).filter(lambda c: c.sum() > 0)


@given(count_tables)
def test_identities_hold_on_random_count_tables(counts: np.ndarray) -> None:
    p = counts / counts.sum()
    result = pid(p)
    assert result.gap < 1e-7
    _assert_identities(p, result)


@given(count_tables)
def test_swapping_the_modalities_swaps_the_unique_atoms(counts: np.ndarray) -> None:
    p = counts / counts.sum()
    a, b = pid(p), pid(p.transpose(1, 0, 2))
    tol = 1e-7 + a.gap + b.gap
    assert abs(a.unique1 - b.unique2) < tol and abs(a.unique2 - b.unique1) < tol
    assert abs(a.redundancy - b.redundancy) < tol and abs(a.synergy - b.synergy) < tol


def test_zero_rows_and_columns_change_nothing() -> None:
    p, expected = CANONICAL["and"]
    padded = np.zeros((4, 3, 5))
    padded[1:3, :2, 2:4] = p
    np.testing.assert_allclose(pid(padded).atoms(), expected, atol=1e-8)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 4, 3), (3, 1, 2), (3, 4, 1)])
def test_single_symbols_and_constant_y_are_exact(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(int(np.prod(shape)))).reshape(shape)
    result = pid(p)
    assert result.gap == 0.0
    _assert_identities(p, result)
    if shape[2] == 1:
        assert result.total == 0.0 and np.all(result.atoms() == 0.0)
    elif shape[0] == 1:                       # X1 constant: everything is unique to X2
        assert result.unique2 == pytest.approx(result.total, abs=1e-12)


def test_sparse_support_with_many_zero_cells() -> None:
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(6 * 5 * 4)).reshape(6, 5, 4)
    p[rng.random(p.shape) < 0.7] = 0.0
    p /= p.sum()
    result = pid(p)
    assert result.gap < 1e-8
    _assert_identities(p, result)


@pytest.mark.parametrize(("p", "message"), [
    (-np.full((2, 2, 2), 1 / 8) + np.eye(2)[:, :, None] * 0.5, "negative"),
    (np.full((2, 2, 2), np.nan), "NaN"),
    (np.full((2, 2, 2), 1 / 7), "sums to"),
    (np.full((4, 4), 1 / 16), "3 axes"),
    (np.zeros((0, 2, 2)), "empty"),
    ("not numbers", "numeric"),
])
def test_invalid_distributions_raise_a_clear_value_error(p: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pid(p)


def test_result_is_json_ready_and_reports_how_exact_it_is() -> None:
    result = pid(CANONICAL["and"][0])
    payload = json.loads(json.dumps(result.to_dict()))
    assert set(payload) >= {"redundancy", "unique1", "unique2", "synergy", "total", "ci",
                            "gap", "solver"}
    assert payload["solver"]["method"] in ("primal-dual", "barrier")
    assert 0 <= payload["gap"] < 1e-8


# ----------------------------------------------------------------- agreement with dit (cone)

def _dit_broja(p: np.ndarray) -> np.ndarray:
    dit = pytest.importorskip("dit")
    pytest.importorskip("ecos")
    from dit.pid import PID_BROJA

    cells = [(idx, v) for idx, v in np.ndenumerate(p) if v > 0]
    dist = dit.Distribution([c for c, _ in cells], [v for _, v in cells])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = PID_BROJA(dist, [[0], [1]], [2], method="cone")
    return np.array([r[((0,), (1,))], r[((0,),)], r[((1,),)], r[((0, 1),)]])


@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 2, 3), (4, 4, 2), (5, 4, 3), (6, 6, 4)])
def test_agrees_with_dit_cone_solver_on_random_distributions(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    for sparsity in (0.0, 0.4):
        p = rng.dirichlet(np.full(int(np.prod(shape)), 0.7)).reshape(shape)
        p[rng.random(shape) < sparsity] = 0.0
        p /= p.sum()
        ours = pid(p)
        np.testing.assert_allclose(ours.atoms(), _dit_broja(p), atol=1e-5)


# ----------------------------------------------------------------- from samples

def test_integer_samples_give_the_pid_of_their_empirical_joint() -> None:
    rng = np.random.default_rng(0)
    x1, x2 = rng.integers(0, 3, 4000), rng.integers(0, 2, 4000)
    y = (x1 + x2) % 2
    expected = pid(np.histogramdd(np.stack([x1, x2, y], 1), bins=(3, 2, 2),
                                  range=[(0, 3), (0, 2), (0, 2)])[0] / 4000)
    result = pid_from_samples(torch.from_numpy(x1), x2, y)
    np.testing.assert_allclose(result.atoms(), expected.atoms(), atol=1e-12)


def test_samples_are_reported_in_bits_not_nats() -> None:
    x1, x2 = np.array([0, 0, 1, 1] * 50), np.array([0, 1, 0, 1] * 50)
    result = pid_from_samples(x1, x2, x1 ^ x2)
    assert result.synergy == pytest.approx(1.0, abs=1e-8)


def test_more_clusters_than_distinct_points_leaves_no_empty_cluster() -> None:
    x1 = np.repeat(np.eye(3), 20, axis=0)                  # 3 distinct points, 60 rows
    x2 = np.random.default_rng(0).normal(size=(60, 2))
    y = np.repeat([0, 1, 2], 20)
    labels = discretize(x1, n_clusters=10)
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    result = pid_from_samples(x1, x2, y, n_clusters=10)
    assert np.all(np.isfinite(result.atoms()))
    assert result.redundancy + result.unique1 == pytest.approx(np.log2(3), abs=1e-8)


def test_bootstrap_intervals_bracket_the_estimate() -> None:
    rng = np.random.default_rng(1)
    x1, x2 = rng.integers(0, 2, 600), rng.integers(0, 2, 600)
    noise = rng.random(600) < 0.1
    y = (x1 ^ x2) ^ noise
    result = pid_from_samples(x1, x2, y, n_boot=30, seed=2)
    assert result.ci is not None and set(result.ci) == {"redundancy", "unique1", "unique2",
                                                        "synergy", "total"}
    lo, hi = result.ci["synergy"]
    assert lo <= result.synergy <= hi and hi - lo < 0.2
    assert pid_from_samples(x1, x2, y, n_boot=30, seed=2).ci == result.ci   # reproducible


def test_float_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="integer class labels"):
        pid_from_samples(np.zeros(4, dtype=int), np.zeros(4, dtype=int), np.zeros(4))


# ----------------------------------------------------------------- model PID

class _NearestCentre(nn.Module):
    """Predicts the label from the latent state it reads off the features by nearest centre;
    ``use`` says which modalities it looks at (a stand-in for a trained fusion model)."""

    def __init__(self, centres1: Tensor, centres2: Tensor, use: str) -> None:
        super().__init__()
        self.register_buffer("c1", centres1)
        self.register_buffer("c2", centres2)
        self.use = use

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        a = torch.cdist(x1, self.c1).argmin(1) % 2          # bit 0 of x1's latent state
        b = torch.cdist(x2, self.c2).argmin(1) % 2
        label = a ^ b if self.use == "both" else a
        return nn.functional.one_hot(label, 2).float()


def _synergy_setup() -> tuple[MultimodalDataset, dict[str, MultimodalModel]]:
    from estimators.synthetic import make_dataset

    data = make_dataset("synergy", 1500, seed=0)
    inputs, latents = data["inputs"], data["latents"]
    centres = {m: torch.stack([inputs[m][torch.from_numpy(latents[m] == s)].mean(0)
                               for s in range(4)]) for m in ("x1", "x2")}
    spec = ModelSpec(modalities=[ModalitySpec(name="x1", kind="tabular", shape=(8,)),
                                 ModalitySpec(name="x2", kind="tabular", shape=(8,))],
                     classes=["0", "1"])
    models = {use: MultimodalModel(_NearestCentre(centres["x1"], centres["x2"], use), spec)
              for use in ("both", "x1 only")}
    return MultimodalDataset(inputs, data["labels"]), models


def test_model_pid_shows_which_interactions_a_model_uses() -> None:
    dataset, models = _synergy_setup()
    data = dataset_pid(dataset, n_clusters=4)["x1|x2"]
    both = model_pid(models["both"], dataset, n_clusters=4)["x1|x2"]
    x1_only = model_pid(models["x1 only"], dataset, n_clusters=4)["x1|x2"]
    assert data.synergy > 0.95 and both.synergy > 0.95
    assert x1_only.unique1 > 0.95 and x1_only.synergy < 0.05


def test_more_than_two_modalities_give_every_pair_and_each_against_the_rest() -> None:
    rng = np.random.default_rng(0)
    a, b, c = (torch.from_numpy(rng.integers(0, 2, 400)) for _ in range(3))
    inputs = {"a": a.float()[:, None], "b": b.float()[:, None], "c": c.float()[:, None]}
    dataset = MultimodalDataset(inputs, a ^ b ^ c)
    result = dataset_pid(dataset, n_clusters=4)
    assert set(result) == {"a|b", "a|c", "b|c", "a|rest", "b|rest", "c|rest"}
    assert result["a|b"].total < 0.05                       # 3-way XOR: no pair knows y
    assert result["a|rest"].synergy > 0.9                   # ... but a with the rest does


def test_token_modalities_are_discretised_by_the_tokens_they_contain() -> None:
    rng = np.random.default_rng(0)
    ids = torch.full((300, 6), 3)                                   # class 0: only token 3
    ids[:150] = torch.from_numpy(rng.choice([2, 4], size=(150, 6)))  # class 1: tokens 2 and 4
    labels = torch.cat([torch.ones(150), torch.zeros(150)]).long()
    image = torch.from_numpy(rng.normal(size=(300, 1, 4, 4))).float()
    result = dataset_pid(MultimodalDataset({"image": image, "text": ids}, labels),
                         n_clusters=3)["image|text"]
    assert result.unique2 > 0.9 and result.unique1 < 0.05


def test_precomputed_predictions_give_the_same_pid_as_model_pid() -> None:
    dataset, models = _synergy_setup()
    with torch.no_grad():
        predictions = models["x1 only"](dataset.inputs).argmax(-1)
    direct = model_pid(models["x1 only"], dataset, n_clusters=4)["x1|x2"]
    given = dataset_pid(dataset, n_clusters=4, target=predictions)["x1|x2"]
    np.testing.assert_allclose(given.atoms(), direct.atoms(), atol=0)
    with pytest.raises(ValueError, match="rows"):
        dataset_pid(dataset, target=predictions[:10])


def test_large_vocabularies_are_reduced_not_densified() -> None:
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, 5000, size=(400, 12)))
    inputs = {"text": ids, "x": torch.from_numpy(rng.normal(size=(400, 3))).float()}
    result = dataset_pid(MultimodalDataset(inputs, torch.from_numpy(rng.integers(0, 2, 400))),
                         n_clusters=3)["text|x"]
    assert np.all(np.isfinite(result.atoms())) and result.total < 0.1
