"""Partial information decomposition (PID): how much a pair of modalities tells about Y
redundantly (R), uniquely (U1, U2) and only together (S).

BROJA definition (Bertschinger, Rauh, Olbrich, Jost & Ay 2014, "Quantifying unique
information"), as used for multimodal data by Liang et al. 2023 ("Quantifying & Modeling
Multimodal Interactions"):

    Δp = {q(x1, x2, y) >= 0 : q(x1, y) = p(x1, y), q(x2, y) = p(x2, y)}
    q* = argmax_{q in Δp} H_q(Y | X1, X2)
    U1 = I_q*(X1; Y | X2),  U2 = I_q*(X2; Y | X1),  R = I(X1; Y) - U1,
    S  = I_p(X1, X2; Y) - I_q*(X1, X2; Y)                             (all in bits)

Every atom is a fixed quantity of p plus or minus ``I_q*(X1,X2;Y)``, so one number, the
optimum of ``min_{q in Δp} -H_q(Y|X1,X2)``, decides all four.

Solver. The dual of that convex problem has one variable per support cell of the two
pair marginals, ``λ[x1, y]`` and ``μ[x2, y]``:

    max  Σ λ[x1,y] p(x1,y) + Σ μ[x2,y] p(x2,y)
    s.t. g[x1,x2] = logsumexp_y (λ[x1,y] + μ[x2,y]) <= 0      for every pair (x1, x2)

(only ``y`` with ``p(x1,y) > 0`` and ``p(x2,y) > 0`` enter a pair's sum: no other cell can
carry mass). We follow its log-barrier central path with damped Newton steps. The Hessian
block of λ is block-diagonal (one ``|Y|×|Y|`` block per x1), so it is eliminated exactly and
each step solves one dense positive-definite system over the smaller of λ and μ. On the path
``q[x1,x2,y] = softmax_y(λ+μ) / (-t g[x1,x2])`` is primal; iterative proportional fitting
puts it exactly on the marginals, and its objective minus the dual objective is a
**certified duality gap**: the exact atoms lie within ``gap`` bits of the returned ones.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import linalg
from scipy.special import logsumexp, softmax

LOG2 = math.log(2.0)
ATOMS = ("redundancy", "unique1", "unique2", "synergy")
_SUM_TOL = 1e-6


@dataclass(frozen=True)
class PIDResult:
    """A PID in bits. ``gap``: certified bound (bits) on each atom's distance to the exact
    BROJA value; ``ci``: bootstrap percentile intervals when requested; ``solver``: how the
    optimum was reached (iterations, seconds, marginal residual)."""

    redundancy: float
    unique1: float
    unique2: float
    synergy: float
    total: float
    ci: dict[str, tuple[float, float]] | None = None
    gap: float = 0.0
    solver: dict[str, Any] = field(default_factory=dict)

    def atoms(self) -> np.ndarray:
        """``[R, U1, U2, S]`` as an array."""
        return np.array([self.redundancy, self.unique1, self.unique2, self.synergy])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = asdict(self)
        if self.ci is not None:
            out["ci"] = {k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()}
        return out


def validate_distribution(p: Any) -> np.ndarray:
    """``p`` as a float64 array ``[|X1|, |X2|, |Y|]`` summing to 1, or a ValueError saying why."""
    try:
        arr = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"p must be a numeric array [|X1|, |X2|, |Y|]: {exc}") from exc
    if arr.ndim != 3:
        raise ValueError(f"p must have 3 axes [|X1|, |X2|, |Y|], got {arr.ndim} "
                         f"(shape {list(arr.shape)})")
    if arr.size == 0:
        raise ValueError(f"p is empty (shape {list(arr.shape)}); every axis needs a symbol")
    if not np.all(np.isfinite(arr)):
        raise ValueError("p contains NaN or infinite entries")
    if np.any(arr < 0):
        raise ValueError(f"p has negative entries (min {arr.min():.3g}); probabilities are >= 0")
    total = arr.sum()
    if abs(total - 1.0) > _SUM_TOL:
        raise ValueError(f"p sums to {total:.9g}, not 1 (tolerance {_SUM_TOL:g}); "
                         "normalise it, e.g. p / p.sum()")
    return arr / total


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats of the flattened non-negative array ``p``."""
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def _mutual_informations(p: np.ndarray) -> tuple[float, float, float, float]:
    """``H(Y), I(X1;Y), I(X2;Y), I(X1,X2;Y)`` in nats."""
    h_y = _entropy(p.sum((0, 1)))
    h_x1, h_x2 = _entropy(p.sum((1, 2))), _entropy(p.sum((0, 2)))
    i1 = h_x1 + h_y - _entropy(p.sum(1))
    i2 = h_x2 + h_y - _entropy(p.sum(0))
    i12 = _entropy(p.sum(2)) + h_y - _entropy(p)
    return h_y, i1, i2, i12


def _neg_cond_entropy(q: np.ndarray) -> float:
    """``-H_q(Y | X1, X2)`` in nats for ``q[x1, x2, y]``."""
    return _entropy(q.sum(2)) - _entropy(q)


@dataclass
class _Problem:
    """The dual over the support: masks, marginals, active pairs."""

    p1: np.ndarray           # p(x1, y)  [n1, ny]
    p2: np.ndarray           # p(x2, y)  [n2, ny]
    allowed: np.ndarray      # [n1, n2, ny] cells that may carry mass
    active: np.ndarray       # [n1, n2] pairs with at least one allowed cell

    @property
    def n_pairs(self) -> int:
        return int(self.active.sum())


def _barrier_terms(lam: np.ndarray, mu: np.ndarray, prob: _Problem
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``g[x1,x2] = lse_y(λ+μ)`` over allowed cells (``-inf`` for inactive pairs) and
    ``π = softmax_y`` (zeros off the support)."""
    c = np.where(prob.allowed, lam[:, None, :] + mu[None, :, :], -np.inf)
    with np.errstate(invalid="ignore"):
        g = logsumexp(c, axis=2)
        pi = np.where(prob.active[..., None], softmax(np.where(prob.active[..., None], c, 0.0),
                                                      axis=2), 0.0)
    pi = np.where(prob.allowed, pi, 0.0)
    return g, pi


def _barrier_value(lam: np.ndarray, mu: np.ndarray, t: float, prob: _Problem) -> float:
    """``-t·dual(λ, μ) - Σ log(-g)``; ``+inf`` outside the strictly feasible set."""
    g, _ = _barrier_terms(lam, mu, prob)
    ga = g[prob.active]
    if np.any(ga >= 0):
        return math.inf
    dual = float((lam * prob.p1).sum() + (mu * prob.p2).sum())
    return -t * dual - float(np.log(-ga).sum())


def _newton_direction(lam: np.ndarray, mu: np.ndarray, t: float, prob: _Problem
                      ) -> tuple[np.ndarray, np.ndarray, float]:
    """Newton step of the barrier objective with λ's block-diagonal Hessian eliminated.

    Per pair, ``φ = -log(-g)`` has gradient ``w π`` and Hessian ``w diag(π) + (w²-w) π πᵀ``
    with ``w = 1/(-g)``; the λ-λ block is ``A_i = Σ_j H_ij``, the μ-μ block ``B_j = Σ_i H_ij``,
    the cross block ``H_ij``. Solving ``(B - Hᵀ A⁻¹ H) dμ = -gμ + Hᵀ A⁻¹ gλ`` costs one GEMM
    of size ``(n1·ny) × (n2·ny)`` and one Cholesky of ``n2·ny``.
    """
    n1, n2, ny = prob.allowed.shape
    g, pi = _barrier_terms(lam, mu, prob)
    w = np.where(prob.active, 1.0 / np.where(prob.active, -g, 1.0), 0.0)
    wpi = w[..., None] * pi
    grad_lam = -t * prob.p1 + wpi.sum(1)
    grad_mu = -t * prob.p2 + wpi.sum(0)
    beta = (w * w - w)[..., None, None]
    hess = beta * pi[..., :, None] * pi[..., None, :]          # [n1, n2, ny, ny]
    idx = np.arange(ny)
    hess[..., idx, idx] += wpi
    # Free (masked) variables get an identity row so the system stays definite; a tiny ridge
    # removes the gauge λ[·,y] += a_y, μ[·,y] -= a_y that leaves everything unchanged.
    a_blocks = hess.sum(1)
    b_blocks = hess.sum(0)
    scale = max(float(np.abs(a_blocks).max()), float(np.abs(b_blocks).max()), 1.0)
    ridge = 1e-13 * scale
    a_blocks[:, idx, idx] += np.where(prob.p1 > 0, ridge, 1.0)
    b_blocks[:, idx, idx] += np.where(prob.p2 > 0, ridge, 1.0)
    grad_lam = np.where(prob.p1 > 0, grad_lam, 0.0)
    grad_mu = np.where(prob.p2 > 0, grad_mu, 0.0)

    chol = np.linalg.cholesky(a_blocks)                           # [n1, ny, ny], lower
    # L_i⁻¹ H_i·  as one batched triangular solve: [n1, ny, n2*ny]
    cross = hess.transpose(0, 2, 1, 3).reshape(n1, ny, n2 * ny)
    lc = _batched_lower_solve(chol, cross)
    lg = _batched_lower_solve(chol, grad_lam[..., None])[..., 0]   # [n1, ny]
    flat = lc.reshape(n1 * ny, n2 * ny)
    schur = _block_diag(b_blocks) - flat.T @ flat
    rhs = -grad_mu.reshape(-1) + flat.T @ lg.reshape(-1)
    d_mu = linalg.solve(schur, rhs, assume_a="pos", check_finite=False)
    # dλ_i = -A_i⁻¹ (gλ_i + H_i· dμ)
    inner = lg + (lc @ d_mu)                                       # [n1, ny]
    d_lam = -_batched_upper_solve(chol, inner[..., None])[..., 0]
    d_mu = d_mu.reshape(n2, ny)
    decrement = -float((grad_lam * d_lam).sum() + (grad_mu * d_mu).sum())
    return d_lam, d_mu, decrement


def _batched_lower_solve(chol: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``L_i⁻¹ rhs_i`` for lower-triangular ``L_i`` (batched over the first axis)."""
    inv = np.linalg.inv(chol)
    return inv @ rhs


def _batched_upper_solve(chol: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``L_i⁻ᵀ rhs_i`` for lower-triangular ``L_i``."""
    inv = np.linalg.inv(chol)
    return inv.transpose(0, 2, 1) @ rhs


def _block_diag(blocks: np.ndarray) -> np.ndarray:
    """Dense block-diagonal matrix from ``[n, k, k]`` blocks."""
    n, k, _ = blocks.shape
    out = np.zeros((n, k, n, k))
    diag = np.arange(n)
    out[diag, :, diag, :] = blocks
    return out.reshape(n * k, n * k)


def _ipf(q: np.ndarray, prob: _Problem, max_iter: int = 2000, tol: float = 1e-15
         ) -> tuple[np.ndarray, float, int]:
    """Iterative proportional fitting of ``q`` onto both pair marginals (Csiszár 1975).

    Returns the fitted ``q`` (its (x2, y) marginal exact, the last step being that one), the
    remaining max-abs residual of the (x1, y) marginal, and the iterations used.
    """
    q = np.maximum(q, np.where(prob.allowed, 1e-30, 0.0))
    residual = math.inf
    for it in range(1, max_iter + 1):
        r1 = q.sum(1)
        q = q * np.divide(prob.p1, r1, out=np.zeros_like(r1), where=r1 > 0)[:, None, :]
        r2 = q.sum(0)
        q = q * np.divide(prob.p2, r2, out=np.zeros_like(r2), where=r2 > 0)[None, :, :]
        residual = float(np.abs(q.sum(1) - prob.p1).max())
        if residual <= tol:
            return q, residual, it
    return q, residual, max_iter


def _solve_min_neg_cond_entropy(p: np.ndarray, tol: float, max_newton: int
                                ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """``q ∈ Δp`` minimising ``-H_q(Y|X1,X2)`` and a certified gap (nats) on its value.

    ``p`` has no zero marginal symbol, ``|X1| >= |X2| >= 2`` and ``|Y| >= 2``.
    """
    p1, p2 = p.sum(1), p.sum(0)
    allowed = (p1[:, None, :] > 0) & (p2[None, :, :] > 0)
    prob = _Problem(p1=p1, p2=p2, allowed=allowed, active=allowed.any(2))
    n1, n2, ny = p.shape
    m = prob.n_pairs
    lam = np.full((n1, ny), -math.log(ny) - 1.0)
    mu = np.zeros((n2, ny))
    t = float(m)
    kappa = 20.0
    newton_steps = outer = 0
    best: tuple[np.ndarray, float, float] | None = None     # (q, gap, residual)
    while newton_steps < max_newton:
        outer += 1
        value = _barrier_value(lam, mu, t, prob)
        for _ in range(60):
            d_lam, d_mu, decrement = _newton_direction(lam, mu, t, prob)
            newton_steps += 1
            if decrement <= 1e-9:
                break
            step = 1.0
            while True:
                trial = _barrier_value(lam + step * d_lam, mu + step * d_mu, t, prob)
                if trial <= value - 0.25 * step * decrement or step < 1e-12:
                    break
                step *= 0.5
            if not math.isfinite(trial):
                break
            lam, mu, value = lam + step * d_lam, mu + step * d_mu, trial
            if decrement <= 1e-6 and step == 1.0:
                break
        g, pi = _barrier_terms(lam, mu, prob)
        w = np.where(prob.active, 1.0 / np.where(prob.active, -g, 1.0), 0.0)
        q, residual, _ = _ipf(w[..., None] * pi / t, prob)
        dual = float((np.where(p1 > 0, lam, 0.0) * p1).sum()
                     + (np.where(p2 > 0, mu, 0.0) * p2).sum())
        gap = max(_neg_cond_entropy(q) - dual, 0.0)
        if best is None or gap < best[1]:
            best = (q, gap, residual)
        if gap <= tol:
            break
        t *= kappa
    assert best is not None
    q, gap, residual = best
    return q, gap, {"newton_steps": newton_steps, "outer_iterations": outer,
                    "n_pairs": m, "marginal_residual": residual}


def pid(p: Any, *, tol: float = 1e-9, max_newton: int = 400) -> PIDResult:
    """Exact BROJA PID (bits) of a discrete joint ``p[x1, x2, y]``.

    ``p``: non-negative array ``[|X1|, |X2|, |Y|]`` summing to 1 (ValueError otherwise).
    ``tol``: target certified duality gap in bits; the result's ``gap`` is the bound reached.
    Zero rows, a constant Y or a single symbol per modality are all fine.
    """
    start = time.perf_counter()
    p = validate_distribution(p)
    # Symbols of zero probability carry nothing: drop them.
    keep1, keep2, keep_y = p.sum((1, 2)) > 0, p.sum((0, 2)) > 0, p.sum((0, 1)) > 0
    core = p[keep1][:, keep2][:, :, keep_y]
    h_y, i1, i2, i12 = _mutual_informations(core)
    n1, n2, ny = core.shape
    info: dict[str, Any] = {"support": [n1, n2, ny]}
    if min(n1, n2, ny) == 1:
        # Δp = {p} when a modality has one symbol; with Y constant every q gives 0 bits.
        q_info, gap_nats = i12, 0.0
        info.update(newton_steps=0, outer_iterations=0, marginal_residual=0.0, n_pairs=n1 * n2)
    else:
        swap = n2 > n1                     # eliminate the larger side, Schur over the smaller
        work = core.transpose(1, 0, 2) if swap else core
        q, gap_nats, solver_info = _solve_min_neg_cond_entropy(work, tol * LOG2, max_newton)
        info.update(solver_info)
        q_info = h_y + _neg_cond_entropy(q)
    gap = gap_nats / LOG2
    atoms = np.array([i1 + i2 - q_info, q_info - i2, q_info - i1, i12 - q_info]) / LOG2
    slack = gap + 1e-9
    if np.any(atoms < -slack):
        raise RuntimeError(f"PID solver returned atoms {atoms.tolist()} below -{slack:.2g} bits "
                           f"(certified gap {gap:.2g}); please report this distribution")
    atoms = np.maximum(atoms, 0.0)          # clip only negatives within the certified slack
    info["seconds"] = time.perf_counter() - start
    return PIDResult(*(float(a) for a in atoms), total=float(i12 / LOG2), gap=float(gap),
                     solver=info)
