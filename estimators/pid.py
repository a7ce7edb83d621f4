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
carry mass). A primal–dual interior-point method (slacks ``z = -g``, multipliers ``s`` of
the pair constraints, Mehrotra predictor–corrector) solves it in 10–20 Newton steps on dense
problems; a log-barrier method with feasible dual iterates takes over when that stalls (very
sparse or degenerate supports). In both, the Newton matrix has a block-diagonal λ-λ part
(one ``|Y|×|Y|`` block per x1), which is eliminated exactly, so each step is one GEMM and
one Cholesky of order ``min(|X1|,|X2|)·|Y|``. The primal estimate ``q = s·softmax_y(λ+μ)``
is fitted exactly onto the marginals by iterative proportional fitting, and its objective
minus the (shifted to feasible) dual objective is a **certified duality gap**: each exact
atom lies within ``gap`` bits of the returned one.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import linalg
from threadpoolctl import ThreadpoolController

_NEGLIGIBLE = 1e-14            # cells below this probability are treated as 0
_FEASIBLE_RESIDUAL = 1e-12   # max |q(x1,y) - p(x1,y)| accepted as on the marginals
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
        out["gap"] = self.gap if math.isfinite(self.gap) else None   # None: not certified
        if self.ci is not None:
            out["ci"] = {k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()}
        return out


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """One scan of the loaded BLAS/OpenMP libraries (a fresh scan costs ~10 ms per call).

    The dense systems here are at most a few thousand wide, where threaded BLAS mostly adds
    synchronisation, and the service runs many jobs side by side: solves use one thread."""
    return ThreadpoolController()


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
    """The dual over the support: marginals, which cells may carry mass, active pairs."""

    p1: np.ndarray           # p(x1, y)  [n1, ny]
    p2: np.ndarray           # p(x2, y)  [n2, ny]
    allowed: np.ndarray      # [n1, n2, ny] cells that may carry mass
    active: np.ndarray       # [n1, n2] pairs with at least one allowed cell

    @classmethod
    def from_joint(cls, p: np.ndarray) -> _Problem:
        p1, p2 = p.sum(1), p.sum(0)
        allowed = (p1[:, None, :] > 0) & (p2[None, :, :] > 0)
        return cls(p1=p1, p2=p2, allowed=allowed, active=allowed.any(2))

    def dual_objective(self, lam: np.ndarray, mu: np.ndarray) -> float:
        return float((np.where(self.p1 > 0, lam, 0.0) * self.p1).sum()
                     + (np.where(self.p2 > 0, mu, 0.0) * self.p2).sum())


def _pair_terms(lam: np.ndarray, mu: np.ndarray, prob: _Problem
                ) -> tuple[np.ndarray, np.ndarray]:
    """``g[x1,x2] = lse_y(λ+μ)`` over allowed cells (``-1`` on inactive pairs, which have no
    constraint) and ``π = softmax_y`` over the same cells (zeros elsewhere)."""
    c = np.where(prob.allowed, lam[:, None, :] + mu[None, :, :], -np.inf)
    top = np.where(prob.active, c.max(2), 0.0)
    e = np.exp(c - top[..., None])
    z = e.sum(2)
    z_safe = np.where(prob.active, z, 1.0)
    g = np.where(prob.active, top + np.log(z_safe), -1.0)
    return g, e / z_safe[..., None]


@dataclass
class _Factor:
    """Factors of the Newton matrix ``H`` (see ``_factor_newton``) for repeated solves."""

    prob: _Problem
    pi: np.ndarray
    a: np.ndarray
    b: np.ndarray
    inv_chol: np.ndarray            # L_i⁻¹ of the λ-λ blocks  [n1, ny, ny]
    cross: np.ndarray               # L_i⁻¹ H_i·  [n1, ny, n2*ny]
    schur_chol: tuple[np.ndarray, bool]
    pinned: np.ndarray              # μ cells held at 0 to fix the gauge  [n2*ny]
    refinements: int = 2            # iterative-refinement passes per solve


def _factor_newton(pi: np.ndarray, a: np.ndarray, b: np.ndarray, prob: _Problem) -> _Factor:
    """Factor ``H = Σ_pairs Jᵀ (a diag(π) + b π πᵀ) J``.

    ``J`` maps ``(λ, μ)`` to the pair's ``λ[x1] + μ[x2]``, so the λ-λ block is block-diagonal
    (``A_i = Σ_j H_ij``), the μ-μ block too (``B_j = Σ_i H_ij``) and the cross block is
    ``H_ij``. λ is eliminated exactly: the Schur complement ``B - Hᵀ A⁻¹ H`` costs one GEMM
    of ``(n1·ny) × (n2·ny)`` and one Cholesky of order ``n2·ny``. Variables of empty cells get
    an identity row. ``H`` is singular along the gauge ``λ[·,y] += c_y, μ[·,y] -= c_y``,
    which changes no pair; one μ cell per y is pinned to 0 to remove it exactly (right-hand
    sides are orthogonal to the gauge, so nothing is lost).
    """
    n1, n2, ny = pi.shape
    hess = b[..., None, None] * pi[..., :, None] * pi[..., None, :]      # [n1, n2, ny, ny]
    diag = np.arange(ny)
    hess[..., diag, diag] += a[..., None] * pi
    a_blocks, b_blocks = hess.sum(1), hess.sum(0)
    a_blocks[:, diag, diag] += np.where(prob.p1 > 0, 0.0, 1.0)
    b_blocks[:, diag, diag] += np.where(prob.p2 > 0, 0.0, 1.0)
    inv_chol = np.linalg.inv(_batched_cholesky(a_blocks))
    cross = inv_chol @ hess.transpose(0, 2, 1, 3).reshape(n1, ny, n2 * ny)
    flat = cross.reshape(n1 * ny, n2 * ny)
    schur = _block_diag(b_blocks) - flat.T @ flat
    pinned = np.zeros((n2, ny), dtype=bool)
    pinned[prob.p2.argmax(0), diag] = True
    pinned = pinned.reshape(-1)
    schur[pinned, :] = 0.0
    schur[:, pinned] = 0.0
    schur[pinned, pinned] = 1.0
    return _Factor(prob, pi, a, b, inv_chol, cross, _cholesky_with_ridge(schur), pinned)


def _batched_cholesky(blocks: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of PSD blocks, computed on the unit-diagonal (Jacobi-scaled)
    blocks, whose entries late in the solve span many orders of magnitude; a rounding-level
    ridge is added only if some scaled block is not numerically definite."""
    d = np.sqrt(np.maximum(np.diagonal(blocks, axis1=1, axis2=2), 1e-300))
    scaled = blocks / (d[:, :, None] * d[:, None, :])
    try:
        chol = np.linalg.cholesky(scaled)
    except np.linalg.LinAlgError:
        chol = np.linalg.cholesky(scaled + 1e-12 * np.eye(blocks.shape[-1]))
    return d[:, :, None] * chol


def _apply_hessian(factor: _Factor, d_lam: np.ndarray, d_mu: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``H [dλ; dμ]`` pair by pair, without forming ``H`` (for iterative refinement)."""
    pi = factor.pi
    c = d_lam[:, None, :] + d_mu[None, :, :]
    h = factor.a[..., None] * pi * c + factor.b[..., None] * pi * (pi * c).sum(2, keepdims=True)
    prob = factor.prob
    return (np.where(prob.p1 > 0, h.sum(1), d_lam), np.where(prob.p2 > 0, h.sum(0), d_mu))


def _solve_factored(factor: _Factor, r_lam: np.ndarray, r_mu: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``H⁻¹ [r_λ; r_μ]`` (the gauge-fixed solution) with iterative refinement, which
    recovers the digits the Schur complement loses to cancellation late in the solve."""
    prob = factor.prob
    r_lam = np.where(prob.p1 > 0, r_lam, 0.0)
    r_mu = np.where(prob.p2 > 0, r_mu, 0.0)
    d_lam, d_mu = _solve_once(factor, r_lam, r_mu)
    for _ in range(factor.refinements):
        h_lam, h_mu = _apply_hessian(factor, d_lam, d_mu)
        e_lam, e_mu = _solve_once(factor, r_lam - h_lam, r_mu - h_mu)
        d_lam, d_mu = d_lam + e_lam, d_mu + e_mu
    return d_lam, d_mu


def _solve_once(factor: _Factor, r_lam: np.ndarray, r_mu: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    n1, ny, n2ny = factor.cross.shape
    cross_r = (factor.inv_chol @ r_lam[..., None])[..., 0]               # L⁻¹ r_λ  [n1, ny]
    flat = factor.cross.reshape(n1 * ny, n2ny)
    rhs = r_mu.reshape(-1) - flat.T @ cross_r.reshape(-1)
    rhs[factor.pinned] = 0.0
    d_mu = linalg.cho_solve(factor.schur_chol, rhs, check_finite=False)
    inner = cross_r - (factor.cross @ d_mu)                              # L⁻¹(r_λ - H dμ)
    d_lam = (factor.inv_chol.transpose(0, 2, 1) @ inner[..., None])[..., 0]
    return d_lam, d_mu.reshape(-1, ny)


def _cholesky_with_ridge(matrix: np.ndarray) -> tuple[np.ndarray, bool]:
    """Cholesky factor of a symmetric PSD matrix, adding a growing ridge if rounding left it
    indefinite (happens only in the gauge directions, which the right-hand side avoids)."""
    ridge = 0.0
    top = max(float(np.abs(np.diag(matrix)).max()), 1e-300)
    for _ in range(12):
        try:
            return linalg.cho_factor(matrix + ridge * np.eye(len(matrix)), lower=True,
                                     check_finite=False)
        except linalg.LinAlgError:
            ridge = top * (1e-14 if ridge == 0.0 else ridge / top * 100.0)
    raise RuntimeError("PID Newton system is not positive definite even with a ridge; "
                       "please report this distribution")


def _block_diag(blocks: np.ndarray) -> np.ndarray:
    """Dense block-diagonal matrix from ``[n, k, k]`` blocks."""
    n, k, _ = blocks.shape
    out = np.zeros((n, k, n, k))
    diag = np.arange(n)
    out[diag, :, diag, :] = blocks
    return out.reshape(n * k, n * k)


def _ipf(q: np.ndarray, prob: _Problem, max_iter: int = 1000, tol: float = 1e-15
         ) -> tuple[np.ndarray, float]:
    """Iterative proportional fitting of ``q`` onto both pair marginals (Csiszár 1975).

    Returns the fitted ``q`` (its (x2, y) marginal exact, that step being last) and the max-abs
    residual left on the (x1, y) marginal.
    """
    q = np.maximum(q, np.where(prob.allowed, 1e-300, 0.0))
    residual = math.inf
    for _ in range(max_iter):
        r1 = q.sum(1)
        q = q * np.divide(prob.p1, r1, out=np.zeros_like(r1), where=r1 > 0)[:, None, :]
        r2 = q.sum(0)
        q = q * np.divide(prob.p2, r2, out=np.zeros_like(r2), where=r2 > 0)[None, :, :]
        previous, residual = residual, float(np.abs(q.sum(1) - prob.p1).max())
        if residual <= tol or residual >= previous:   # converged, or at the rounding floor
            break
    return q, residual


def _solve_min_neg_cond_entropy(p: np.ndarray, tol: float, max_iter: int
                                ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """``q ∈ Δp`` minimising ``-H_q(Y|X1,X2)`` and a certified gap (nats) on its value.

    The fast primal–dual method certifies dense problems in 10–20 iterations. On sparse or
    degenerate supports it can stall (complementarity reached before feasibility); then the
    slower but globally convergent log-barrier method, whose dual iterates stay feasible,
    finishes the job.
    """
    prob = _Problem.from_joint(p)
    with np.errstate(all="ignore"):     # a diverging fast path is caught and handed over
        q, gap, info = _primal_dual(p, prob, tol, min(max_iter, 60))
    if gap > tol:
        with np.errstate(all="ignore"):
            q_b, gap_b, info_b = _barrier(prob, tol, max_newton=min(4 * max_iter, 300))
        info = {**info, **info_b, "method": "barrier"}
        if gap_b < gap:
            q, gap = q_b, gap_b
    return q, gap, info


def _primal_dual(p: np.ndarray, prob: _Problem, tol: float, max_iter: int
                 ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Primal–dual interior point on the dual problem; returns ``(q, gap, info)``.

    Primal–dual interior point on the dual above with slacks ``z = -g >= 0`` (the form used
    by IPOPT, Wächter & Biegler 2006, so only the linear bounds ``z, s > 0`` limit a step)
    and multipliers ``s[x1,x2] >= 0`` of the pair constraints; ``q = s·π`` is the primal
    estimate. Each iteration takes a Mehrotra predictor–corrector Newton step of the
    perturbed KKT system ``Σ_j s π = p(x1,y)``, ``Σ_i s π = p(x2,y)``, ``g + z = 0``,
    ``s z = 1/t``. Near the end ``q`` is fitted onto the exact marginals (IPF) and the dual
    shifted to feasibility; ``-H_q(Y|X1,X2) - dual`` is then a certified gap.
    """
    active = prob.active
    m = int(active.sum())
    # Start from the independent coupling q0 = p(x1,y) p(x2,y) / p(y), which lies in Δp and
    # is positive on every allowed cell: λ, μ reproduce its conditionals π, s its pair masses,
    # and a common shift puts every g at or below -1. The start is primal-dual feasible.
    p_y = p.sum((0, 1))
    q0 = prob.p1[:, None, :] * prob.p2[None, :, :] / p_y
    s = q0.sum(2)
    log_s = np.log(np.where(active, s, 1.0))
    with np.errstate(divide="ignore"):
        lam = np.where(prob.p1 > 0, np.log(prob.p1) - np.log(p_y), 0.0)
        mu = np.where(prob.p2 > 0, np.log(prob.p2), 0.0)
    lam -= float(log_s[active].max()) + 1.0
    g, pi = _pair_terms(lam, mu, prob)
    z = np.where(active, -g, 1.0)
    best: tuple[np.ndarray, float, float] | None = None
    iterations = 0
    for iterations in range(1, max_iter + 1):
        g, pi = _pair_terms(lam, mu, prob)
        q = s[..., None] * pi
        r_lam = np.where(prob.p1 > 0, q.sum(1) - prob.p1, 0.0)
        r_mu = np.where(prob.p2 > 0, q.sum(0) - prob.p2, 0.0)
        r_prim = np.where(active, g + z, 0.0)
        eta = float((s * z)[active].sum())
        if eta < 1e2 * tol or (eta < 1e-4 and iterations % 3 == 0):
            candidate = _certify(lam, mu, s, prob)
            if best is None or candidate[1] < best[1]:
                best = candidate
            if best[1] <= tol:
                break
        b = np.where(active, s / z - s, 0.0)
        factor = _factor_newton(pi, s, b, prob)
        factor.refinements = 0 if eta > 1e-6 else 2   # accuracy matters only near the end

        # Predictor (affine) step, then centring + second-order correction (Mehrotra 1992).
        r_aff = np.where(active, s * z, 0.0)
        _, _, ds_a, dz_a = _direction(factor, pi, s, z, r_lam, r_mu, r_prim, r_aff)
        alpha_aff = min(_max_step(s, ds_a), _max_step(z, dz_a))
        eta_aff = float(((s + alpha_aff * ds_a) * (z + alpha_aff * dz_a))[active].sum())
        sigma = min((eta_aff / eta) ** 3, 1.0)
        r_plain = np.where(active, s * z - sigma * eta / m, 0.0)
        d_lam, d_mu, d_s, d_z = _direction(factor, pi, s, z, r_lam, r_mu, r_prim,
                                           r_plain + ds_a * dz_a)
        step = min(1.0, 0.995 * min(_max_step(s, d_s), _max_step(z, d_z)))
        lam, mu = lam + step * d_lam, mu + step * d_mu
        s = np.where(active, s + step * d_s, 0.0)
        z = np.where(active, z + step * d_z, 1.0)
        if not (np.isfinite(lam).all() and np.isfinite(mu).all() and np.isfinite(s).all()
                and np.isfinite(z).all()) or step < 1e-8:
            break                                   # diverged or jammed: leave it to the barrier
    if best is None or best[1] > tol:
        candidate = _certify(lam, mu, s, prob)
        if best is None or candidate[1] < best[1]:
            best = candidate
    q, gap, residual = best
    return q, gap, {"iterations": iterations, "n_pairs": m, "marginal_residual": residual,
                    "method": "primal-dual"}


def _barrier(prob: _Problem, tol: float, max_newton: int
             ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Log-barrier path following on the dual (Boyd & Vandenberghe §11.3).

    Minimises ``-t·dual(λ, μ) - Σ log(-g)`` by damped Newton steps with backtracking that
    keeps every ``g < 0``, for ``t`` growing 8× per centring. On the path
    ``q = π / (t·(-g))`` is primal with gap ``m / t``; every centred point is certified.
    """
    active = prob.active
    m = int(active.sum())
    p_y = prob.p1.sum(0)
    with np.errstate(divide="ignore"):
        lam = np.where(prob.p1 > 0, np.log(prob.p1) - np.log(p_y), 0.0)
        mu = np.where(prob.p2 > 0, np.log(prob.p2), 0.0)
    g, _ = _pair_terms(lam, mu, prob)
    lam -= float(g[active].max()) + 1.0                 # strictly feasible: every g <= -1
    t = float(m)
    newton = 0
    best: tuple[np.ndarray, float, float] = (np.zeros(0), math.inf, math.inf)

    def value(lam: np.ndarray, mu: np.ndarray) -> float:
        g, _ = _pair_terms(lam, mu, prob)
        if np.any(g[active] >= 0):
            return math.inf
        return -t * prob.dual_objective(lam, mu) - float(np.log(-g[active]).sum())

    while newton < max_newton:
        current = value(lam, mu)
        for _ in range(50):
            g, pi = _pair_terms(lam, mu, prob)
            w = np.where(active, 1.0 / np.where(active, -g, 1.0), 0.0)
            grad_lam = np.where(prob.p1 > 0, -t * prob.p1 + (w[..., None] * pi).sum(1), 0.0)
            grad_mu = np.where(prob.p2 > 0, -t * prob.p2 + (w[..., None] * pi).sum(0), 0.0)
            factor = _factor_newton(pi, w, w * w - w, prob)
            d_lam, d_mu = _solve_factored(factor, -grad_lam, -grad_mu)
            newton += 1
            with np.errstate(all="ignore"):
                decrement = -float((grad_lam * d_lam).sum() + (grad_mu * d_mu).sum())
            if not math.isfinite(decrement) or decrement <= 1e-10:
                break
            # Directions along cells of tiny mass are nearly flat; capping the move at 5
            # nats per variable keeps Newton from running off to where softmax underflows.
            step = min(1.0, 5.0 / max(float(np.abs(d_lam).max()), float(np.abs(d_mu).max()),
                                      1e-300))
            trial = value(lam + step * d_lam, mu + step * d_mu)
            while trial > current - 0.25 * step * decrement and step > 1e-12:
                step *= 0.5
                trial = value(lam + step * d_lam, mu + step * d_mu)
            if not math.isfinite(trial):
                break
            lam, mu, current = lam + step * d_lam, mu + step * d_mu, trial
            if decrement <= 1e-8 or newton >= max_newton:
                break
        g, _ = _pair_terms(lam, mu, prob)
        s = np.where(active, 1.0 / (t * np.where(active, -g, 1.0)), 0.0)
        candidate = _certify(lam, mu, s, prob)
        if candidate[1] < best[1]:
            best = candidate
        if best[1] <= tol:
            break
        t *= 8.0
    q, gap, residual = best
    return q, gap, {"newton_steps": newton, "marginal_residual": residual}


def _direction(factor: _Factor, pi: np.ndarray, s: np.ndarray, z: np.ndarray, r_lam: np.ndarray,
               r_mu: np.ndarray, r_prim: np.ndarray, r_cent: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Newton step ``(dλ, dμ, ds, dz)`` of the KKT system for a complementarity target
    ``s z - r_cent``, with ``ds`` and ``dz`` eliminated (``H`` from ``_factor_newton``)."""
    active = factor.prob.active
    v = np.where(active, (s * r_prim - r_cent) / z, 0.0)[..., None] * pi
    d_lam, d_mu = _solve_factored(factor, -r_lam - v.sum(1), -r_mu - v.sum(0))
    d_g = (pi * (d_lam[:, None, :] + d_mu[None, :, :])).sum(2)
    d_s = np.where(active, (s * (d_g + r_prim) - r_cent) / z, 0.0)
    d_z = np.where(active, (-r_cent - z * d_s) / np.where(active, s, 1.0), 0.0)
    return d_lam, d_mu, d_s, d_z


def _max_step(v: np.ndarray, dv: np.ndarray) -> float:
    """Largest ``α <= 1`` keeping ``v + α dv >= 0``."""
    shrink = dv < 0
    return min(1.0, float((-v[shrink] / dv[shrink]).min())) if shrink.any() else 1.0


def _certify(lam: np.ndarray, mu: np.ndarray, s: np.ndarray, prob: _Problem
             ) -> tuple[np.ndarray, float, float]:
    """Feasible primal ``q`` (IPF of ``s·π``), its certified gap (nats) and marginal residual.

    The dual point is made feasible by lowering every λ by ``max(0, max g)``, which lowers
    every ``g`` and the dual objective by exactly that amount (``Σ p(x1,y) = 1``).
    """
    g, pi = _pair_terms(lam, mu, prob)
    q, residual = _ipf(s[..., None] * pi, prob)
    shift = max(0.0, float(g[prob.active].max()))
    dual = prob.dual_objective(lam, mu) - shift
    if residual > _FEASIBLE_RESIDUAL:      # not yet on Δp: no certificate from this point
        return q, math.inf, residual
    return q, max(_neg_cond_entropy(q) - dual, 0.0), residual


def pid(p: Any, *, tol: float = 1e-9, max_iter: int = 200) -> PIDResult:
    """Exact BROJA PID (bits) of a discrete joint ``p[x1, x2, y]``.

    ``p``: non-negative array ``[|X1|, |X2|, |Y|]`` summing to 1 (ValueError otherwise).
    ``tol``: target certified duality gap in bits; the result's ``gap`` is the bound reached.
    Zero rows, a constant Y or a single symbol per modality are all fine.
    """
    start = time.perf_counter()
    p = validate_distribution(p)
    # Mass below double precision's resolution of a sum of probabilities is set to zero (and
    # reported): it moves no atom by more than ~1e-12 bits but would wreck the conditioning.
    tiny = (p > 0) & (p < _NEGLIGIBLE)
    dropped = float(p[tiny].sum())
    if dropped > 0:
        p = np.where(tiny, 0.0, p)
        p = p / p.sum()
    # Symbols of zero probability carry nothing: drop them.
    keep1, keep2, keep_y = p.sum((1, 2)) > 0, p.sum((0, 2)) > 0, p.sum((0, 1)) > 0
    core = p[keep1][:, keep2][:, :, keep_y]
    h_y, i1, i2, i12 = _mutual_informations(core)
    n1, n2, ny = core.shape
    info: dict[str, Any] = {"support": [n1, n2, ny], "dropped_mass": dropped}
    if min(n1, n2, ny) == 1:
        # Δp = {p} when a modality has one symbol; with Y constant every q gives 0 bits.
        q_info, gap_nats = i12, 0.0
        info.update(iterations=0, marginal_residual=0.0, n_pairs=n1 * n2)
    else:
        swap = n2 > n1                     # eliminate the larger side, Schur over the smaller
        work = core.transpose(1, 0, 2) if swap else core
        with _blas_controller().limit(limits=1, user_api="blas"):
            q, gap_nats, solver_info = _solve_min_neg_cond_entropy(work, tol * LOG2, max_iter)
        info.update(solver_info)
        q_info = h_y + _neg_cond_entropy(q)
    gap = gap_nats / LOG2
    atoms = np.array([i1 + i2 - q_info, q_info - i2, q_info - i1, i12 - q_info]) / LOG2
    slack = gap + 1e-9
    if np.any(atoms < -slack):
        raise RuntimeError(f"PID solver returned atoms {atoms.tolist()} below -{slack:.2g} bits "
                           f"(certified gap {gap:.2g}); please report this distribution")
    atoms = np.maximum(atoms, 0.0)          # clip only negatives within the certified slack
    atoms[atoms < 1e-14] = 0.0              # rounding residue of the differences above
    info["seconds"] = time.perf_counter() - start
    return PIDResult(*(float(a) for a in atoms), total=float(i12 / LOG2), gap=float(gap),
                     solver=info)


# --------------------------------------------------------------------------- from samples

def discretize(x: Any, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """Symbols ``0..k-1`` for the rows of ``x``.

    Integer labels ``[N]`` are kept (renumbered densely); anything else is flattened to
    float features ``[N, d]`` and clustered with k-means (``n_clusters`` centres, as the CVX
    estimator of Liang et al. 2023), after a randomized PCA to 32 dimensions when ``d > 64``
    (images: memory and time stay bounded). Labels are renumbered over the clusters actually
    used, so an empty cluster never becomes a zero row.
    """
    arr = _as_numpy(x)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError("need at least one sample (an array [N] or [N, d])")
    if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
        return np.unique(arr, return_inverse=True)[1].astype(np.int64)
    feats = arr.reshape(arr.shape[0], -1)
    if not np.all(np.isfinite(feats)):
        raise ValueError("features contain NaN or infinite values")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    with _blas_controller().limit(limits=1):   # small problems: threads only add contention
        if feats.shape[1] > 64 and feats.shape[0] > 32:
            feats = PCA(n_components=32, svd_solver="randomized",
                        random_state=seed).fit_transform(feats.astype(np.float32))
        feats = feats.astype(np.float64)
        distinct, inverse = np.unique(feats, axis=0, return_inverse=True)
        if len(distinct) <= n_clusters:       # already discrete: no clustering needed
            return inverse.reshape(-1).astype(np.int64)
        labels = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(feats)
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def joint_distribution(s1: np.ndarray, s2: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Plug-in joint ``p[x1, x2, y]`` of three symbol arrays ``[N]`` (symbols ``0..k-1``)."""
    shape = (int(s1.max()) + 1, int(s2.max()) + 1, int(y.max()) + 1)
    flat = np.ravel_multi_index((s1, s2, y), shape)
    return np.bincount(flat, minlength=math.prod(shape)).reshape(shape) / len(s1)


def _labels(y: Any) -> np.ndarray:
    arr = _as_numpy(y)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"y must be integer class labels [N], got dtype {arr.dtype} with "
                         f"shape {list(arr.shape)}")
    return np.unique(arr, return_inverse=True)[1].astype(np.int64)


def pid_from_samples(x1: Any, x2: Any, y: Any, *, n_clusters: int = 10, seed: int = 0,
                     n_boot: int = 0, level: float = 0.95, tol: float = 1e-9) -> PIDResult:
    """BROJA PID (bits) of samples: discretise, build the plug-in joint, decompose it.

    ``x1``, ``x2``: int labels ``[N]`` or float features ``[N, d]`` (k-means, see
    ``discretize``); ``y``: int labels ``[N]``. ``n_boot > 0`` adds percentile bootstrap
    intervals at ``level`` for every atom and the total: the joint table is resampled
    (multinomial counts of ``N`` draws), so the intervals hold the discretisation fixed and
    show the sampling uncertainty of the plug-in estimate. Plug-in estimates are biased
    upwards for small ``N`` per cell; keep ``N`` well above ``|X1|·|X2|·|Y|``.
    """
    labels = _labels(y)
    n = len(labels)
    s1, s2 = discretize(x1, n_clusters, seed=seed), discretize(x2, n_clusters, seed=seed)
    if len(s1) != n or len(s2) != n:
        raise ValueError(f"x1, x2 and y need the same number of rows, got {len(s1)}, "
                         f"{len(s2)} and {n}")
    p = joint_distribution(s1, s2, labels)
    result = pid(p, tol=tol)
    if n_boot <= 0:
        return result
    return _with_bootstrap(result, p, n, n_boot=n_boot, level=level, seed=seed)


def _with_bootstrap(result: PIDResult, p: np.ndarray, n: int, *, n_boot: int, level: float,
                    seed: int) -> PIDResult:
    """``result`` with percentile intervals from ``n_boot`` multinomial resamples of ``p``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, p.reshape(-1), size=n_boot)
    draws = np.array([[*(r := pid(c.reshape(p.shape) / n, tol=1e-7)).atoms(), r.total]
                      for c in counts])
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)], axis=0)
    ci = {name: (float(a), float(b)) for name, a, b in zip((*ATOMS, "total"), lo, hi,
                                                           strict=True)}
    solver = {**result.solver, "n_boot": n_boot, "level": level}
    return PIDResult(result.redundancy, result.unique1, result.unique2, result.synergy,
                     result.total, ci=ci, gap=result.gap, solver=solver)


# --------------------------------------------------------------------------- datasets, models

def dataset_pid(dataset: Any, *, n_clusters: int = 10, seed: int = 0, n_boot: int = 0,
                target: Any = None) -> dict[str, PIDResult]:
    """PID of a ``MultimodalDataset``'s labels, or of ``target`` (int ``[N]``, e.g. model
    predictions already computed elsewhere) in their place; keys as in ``model_pid``."""
    y = _labels(dataset.labels if target is None else target)
    if len(y) != len(dataset):
        raise ValueError(f"target has {len(y)} rows but the dataset has {len(dataset)}")
    return _pairwise_pid(dataset, y, n_clusters=n_clusters, seed=seed, n_boot=n_boot)


def model_pid(model: Any, dataset: Any, *, n_clusters: int = 10, seed: int = 0,
              n_boot: int = 0, batch_size: int = 256) -> dict[str, PIDResult]:
    """PID with the model's predicted class in place of Y: which interactions it has learned
    (Liang et al. 2023, §4: a model's interactions are the PID of its predictions).

    ``model``: a ``MultimodalModel``; ``dataset``: a ``MultimodalDataset``. Modalities are
    discretised exactly as ``dataset_pid`` does (same ``n_clusters`` and ``seed``), so the two
    results are comparable. Returns ``{"a|b": PIDResult}`` for every pair of modalities and,
    with more than two, ``{"a|rest": PIDResult}`` for each modality against all the others.
    """
    import torch

    predictions = []
    with torch.no_grad():
        for inputs, _ in dataset.batches(batch_size):
            predictions.append(model(inputs).argmax(-1).cpu().numpy())
    return dataset_pid(dataset, n_clusters=n_clusters, seed=seed, n_boot=n_boot,
                       target=np.concatenate(predictions).astype(np.int64))


def _modality_features(x: Any, seed: int = 0) -> np.ndarray:
    """Float features ``[N, d]`` of one modality: token ids become bag-of-token counts (ids
    are names, not numbers), kept sparse and reduced to 32 dimensions by a truncated SVD when
    more than 64 distinct tokens occur; everything else is flattened."""
    arr = _as_numpy(x)
    if np.issubdtype(arr.dtype, np.integer) and arr.ndim == 2:
        from scipy import sparse

        tokens, column = np.unique(arr, return_inverse=True)
        n = arr.shape[0]
        counts = sparse.csr_matrix((np.ones(arr.size), (np.repeat(np.arange(n), arr.shape[1]),
                                                         column.reshape(-1))),
                                   shape=(n, len(tokens)))
        if len(tokens) <= 64:
            return counts.toarray()
        from sklearn.decomposition import TruncatedSVD

        with _blas_controller().limit(limits=1):
            return TruncatedSVD(n_components=32, random_state=seed).fit_transform(counts)
    return arr.reshape(arr.shape[0], -1).astype(np.float64)


def _pairwise_pid(dataset: Any, target: np.ndarray, *, n_clusters: int, seed: int,
                  n_boot: int) -> dict[str, PIDResult]:
    names = list(dataset.names)
    if len(names) < 2:
        raise ValueError(f"PID needs at least two modalities, the dataset has {names}")
    feats = {name: _modality_features(dataset.inputs[name], seed) for name in names}
    symbols = {name: discretize(feats[name], n_clusters, seed=seed) for name in names}
    out: dict[str, PIDResult] = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out[f"{a}|{b}"] = _pid_symbols(symbols[a], symbols[b], target, n_boot, seed)
    if len(names) > 2:
        for a in names:
            rest = np.concatenate([_standardize(feats[b]) for b in names if b != a], axis=1)
            out[f"{a}|rest"] = _pid_symbols(symbols[a], discretize(rest, n_clusters, seed=seed),
                                            target, n_boot, seed)
    return out


def _standardize(x: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-total-variance columns so no modality dominates a joint clustering."""
    centred = x - x.mean(0)
    return centred / max(float(np.sqrt((centred ** 2).sum(1).mean())), 1e-12)


def _pid_symbols(s1: np.ndarray, s2: np.ndarray, y: np.ndarray, n_boot: int, seed: int
                 ) -> PIDResult:
    labels = np.unique(y, return_inverse=True)[1]
    p = joint_distribution(s1, s2, labels)
    result = pid(p)
    if n_boot > 0:
        result = _with_bootstrap(result, p, len(y), n_boot=n_boot, level=0.95, seed=seed)
    return result
