"""Second-order, cross-modal interactions: Hessian blocks, heatmaps, Integrated Hessians.

For a model ``f`` in feature space (see ``estimators.model``), the interaction between
entry ``i`` of modality ``a`` and entry ``j`` of modality ``b`` is the mixed partial
``∂²f_c / ∂x_{a,i} ∂x_{b,j}`` (MultiViz's second-order gradient, Liang et al. 2023). It is
exactly zero for every pair when ``f`` is additive across ``a`` and ``b``, which is what
makes it a test for cross-modal interaction.

Everything is built from one primitive, the mixed Hessian-vector product
``v ↦ H_{a,b} v = ∂/∂ε ∇_{x_a} f(x_b + εv)`` (with ``torch.func``), vmapped over the batch
and over the directions:

- ``cross_hessian``: the full block; the directions are the unit vectors of the modality
  with fewer entries, so forward mode runs on the smaller side (the other orientation was
  ~9x slower in the issue's measurements).
- ``interaction_heatmap``: an element×element map (image patches, tokens, time-series
  windows, tabular features) ``M[p, q] = Σ_{i∈p, j∈q} w_i H_ij w_j`` with one HVP per
  element of the side with fewer elements (direction = that element's entries of ``w``), so
  it never materialises a block that would not fit in memory. With ``weight="input"``
  (``w = x``) ``M`` is the cross term of the second-order Taylor expansion of ``f`` around 0;
  with ``weight="ones"`` it is the plain sum of the block over each element pair. These few
  HVPs run as double backward (``∇_a ⟨∇_b f, v⟩``), which measured ~2x faster here than
  forward-over-reverse for ~10 directions; the block keeps forward-over-reverse.
- ``integrated_hessians``: Janizek, Sturmfels & Lee 2021, "Explaining Explanations:
  Axiomatic Feature Interactions for Deep Networks":
  ``Γ_ij = δ_i δ_j ∫₀¹∫₀¹ αβ H_ij(x' + αβδ) dα dβ`` (δ = x − x'), plus, on the diagonal of
  a modality with itself, ``δ_i ∫∫ ∂_i f(x' + αβδ) dα dβ``. Since ``αβ`` of two uniform
  variables has density ``−ln t``, the double integral is ``∫₀¹ (−ln t) k(t) dt``, computed
  with an m-node Gauss rule for the weight ``−ln t`` (exact for polynomials of degree
  ``2m − 1``): m block evaluations instead of m². Completeness: summed over *all* pairs of
  features ``Σ_ij Γ_ij = f(x) − f(x')``; with the rule this sum equals
  ``Σ_k ω_k (g'(t_k) + t_k g''(t_k))`` for ``g(t) = f(x' + tδ)``, so the returned ``delta``
  is the exact completeness error of the full matrix, from two extra jvps per node.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from estimators.attribution import (
    Baselines,
    ElementLayout,
    Target,
    element_layout,
    feature_baselines,
    to_elements,
)
from estimators.model import MultimodalModel, Output, apply_output

Weight = Literal["input", "ones"]
Features = dict[str, Tensor]


# -- the per-sample scalar function -------------------------------------------------------


def _target_onehot(target: Target, batch: int, n_classes: int) -> Tensor:
    t = torch.as_tensor(target).long()
    t = t.expand(batch) if t.ndim == 0 else t
    if t.shape != (batch,):
        raise ValueError(f"target must be an int or an int tensor [B] with B={batch}, "
                         f"got shape {list(t.shape)}")
    return torch.nn.functional.one_hot(t, n_classes).to(torch.float32)


def _sample_fn(model: MultimodalModel, ids: Mapping[str, Tensor], onehot: Tensor,
               output: Output) -> Callable[[Features], Tensor]:
    """``f(features of one sample) -> scalar f_target``; runs the model on a batch of one."""
    names = model.spec.names

    def f(feats: Features) -> Tensor:
        batched = {k: v.unsqueeze(0) for k, v in feats.items()}
        raw = {n: ids[n].unsqueeze(0) if n in ids else batched[n] for n in names}
        out = apply_output(model.forward_embedded(raw, batched), output)[0]
        return (out * onehot.to(out.dtype)).sum()

    return f


def _hvp(f: Callable[[Features], Tensor], feats: Features, out: str,
         along: str) -> Callable[[Tensor], Tensor]:
    """``v ↦ H_{out, along} v``, shaped like ``feats[out]`` (``out == along`` allowed)."""

    def grad_out(x_along: Tensor) -> Tensor:
        moved = {**feats, along: x_along}
        return grad(lambda x_out: f({**moved, out: x_out}))(moved[out])

    return lambda v: jvp(grad_out, (feats[along],), (v,))[1]


def _hvp_reverse(f: Callable[[Features], Tensor], feats: Features, out: str,
                 along: str) -> Callable[[Tensor], Tensor]:
    """Same as ``_hvp`` by double backward, ``∇_out ⟨∇_along f, v⟩``: for a handful of
    directions its fixed cost per call is lower than forward-over-reverse's."""

    def directional(x_out: Tensor, v: Tensor) -> Tensor:
        moved = {**feats, out: x_out}
        g = grad(lambda x_along: f({**moved, along: x_along}))(moved[along])
        return (g * v).sum()

    return lambda v: grad(directional)(feats[out], v)


def _check_pair(model: MultimodalModel, a: str, b: str) -> None:
    for name in (a, b):
        if name not in model.spec.names:
            raise ValueError(f"no modality {name!r}; the model has {model.spec.names}")


def _ids(model: MultimodalModel, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {n: inputs[n] for n in model.token_names}


# -- full block ------------------------------------------------------------------------------


def _block(f: Callable[[Features], Tensor], feats: Features, a: str, b: str,
           chunk_size: int | None) -> Tensor:
    """``∂²f/∂x_a∂x_b`` for one sample, ``[*shape_a, *shape_b]``."""
    sa, sb = feats[a].shape, feats[b].shape
    na, nb = math.prod(sa), math.prod(sb)
    along = a if na <= nb else b
    other = b if along == a else a
    n_along = math.prod(feats[along].shape)
    basis = torch.eye(n_along, dtype=feats[along].dtype).reshape(n_along, *feats[along].shape)
    rows = vmap(_hvp(f, feats, other, along), chunk_size=chunk_size)(basis)  # [n_along, *s_o]
    if along == a:
        return rows.reshape(*sa, *sb)
    return rows.reshape(nb, na).transpose(0, 1).reshape(*sa, *sb)


def cross_hessian(model: MultimodalModel, inputs: Mapping[str, Tensor], a: str, b: str, *,
                  target: Target, output: Output = "logits",
                  chunk_size: int | None = None) -> Tensor:
    """``∂²f_target / ∂x_a ∂x_b`` for every instance: ``[B, *shape_a, *shape_b]``.

    Shapes are feature-space shapes (a token modality's is its embedding output ``[T, D]``);
    the other modalities stay at the instance's own values. ``a == b`` gives the (symmetric)
    within-modality Hessian. ``chunk_size`` bounds how many HVP directions run at once.
    """
    _check_pair(model, a, b)
    features = model.embed(inputs)
    batch = features[a].shape[0]
    onehot = _target_onehot(target, batch, model.spec.n_classes)

    def one(feats: Features, ids: dict[str, Tensor], oh: Tensor) -> Tensor:
        return _block(_sample_fn(model, ids, oh, output), feats, a, b, chunk_size)

    return vmap(one)(features, _ids(model, inputs), onehot).detach()


# -- element×element heatmap -------------------------------------------------------------------


@dataclass(frozen=True)
class InteractionMap:
    """Element×element interactions between modalities ``a`` and ``b``.

    ``matrix``: ``[B, Ea, Eb]``; ``layout_a`` / ``layout_b`` say what the elements are
    (``grid``: image patch rows×cols, tokens, windows, features; ``size``: patch side or
    window length) so a UI can map row/column indices back onto the inputs.
    """

    a: str
    b: str
    matrix: Tensor
    layout_a: ElementLayout
    layout_b: ElementLayout
    weight: str


def _weights(features: Features, name: str, weight: Weight) -> Tensor:
    if weight == "input":
        return features[name]
    if weight == "ones":
        return torch.ones_like(features[name])
    raise ValueError(f"weight must be 'input' or 'ones', not {weight!r}")


def interaction_heatmap(model: MultimodalModel, inputs: Mapping[str, Tensor], a: str, b: str,
                        *, target: Target, output: Output = "logits", weight: Weight = "input",
                        size_a: int | None = None, size_b: int | None = None,
                        chunk_size: int | None = None) -> InteractionMap:
    """``M[p, q] = Σ_{i∈p, j∈q} w_i ∂²f/∂x_{a,i}∂x_{b,j} w_j`` for elements ``p`` of ``a`` and
    ``q`` of ``b``, from one HVP per element of the side with fewer elements.

    ``weight="input"`` (``w = x``, default): the a×b cross term of the second-order Taylor
    expansion, in units of the output; ``"ones"``: the plain block sum. ``size_a`` /
    ``size_b``: image patch side or time-series window (defaults in ``element_layout``).
    """
    _check_pair(model, a, b)
    features = model.embed(inputs)
    batch = features[a].shape[0]
    onehot = _target_onehot(target, batch, model.spec.n_classes)
    lay_a = element_layout(model.spec.modality(a), features[a].shape[1:], size=size_a)
    lay_b = element_layout(model.spec.modality(b), features[b].shape[1:], size=size_b)
    along, other = (b, a) if lay_b.n_elements <= lay_a.n_elements else (a, b)
    lay_along, lay_other = (lay_b, lay_a) if along == b else (lay_a, lay_b)
    membership = torch.nn.functional.one_hot(lay_along.index, lay_along.n_elements).T
    membership = membership.to(features[along].dtype)  # [E_along, n_along]
    w_along = _weights(features, along, weight)
    w_other = _weights(features, other, weight)

    def one(feats: Features, ids: dict[str, Tensor], oh: Tensor, wa: Tensor,
            wo: Tensor) -> Tensor:
        directions = (membership * wa.reshape(1, -1)).reshape(-1, *wa.shape)
        hv = vmap(_hvp_reverse(_sample_fn(model, ids, oh, output), feats, other, along),
                  chunk_size=chunk_size)(directions)  # [E_along, *shape_other]
        return to_elements(hv * wo, lay_other)  # [E_along, E_other]

    maps = vmap(one)(features, _ids(model, inputs), onehot, w_along, w_other).detach()
    matrix = maps if along == a else maps.transpose(1, 2)
    return InteractionMap(a, b, matrix, lay_a, lay_b, weight)


def block_to_elements(block: Tensor, layout_a: ElementLayout, layout_b: ElementLayout, *,
                      reduce: str = "sum") -> Tensor:
    """Reduce a full block ``[B, *shape_a, *shape_b]`` to ``[B, Ea, Eb]`` by summing
    (``reduce="sum"``) or summing absolute values (``"abs_sum"``, which no HVP can give)."""
    if reduce not in ("sum", "abs_sum"):
        raise ValueError(f"reduce must be 'sum' or 'abs_sum', not {reduce!r}")
    x = block.abs() if reduce == "abs_sum" else block
    x = to_elements(x, layout_b)  # [B, *shape_a, Eb]
    x = x.movedim(-1, 1)  # [B, Eb, *shape_a]
    x = to_elements(x, layout_a)  # [B, Eb, Ea]
    return x.transpose(1, 2)


def top_pairs(matrix: Tensor, k: int = 10) -> list[tuple[int, int, float]] | list[
        list[tuple[int, int, float]]]:
    """The ``k`` element pairs with the largest ``|M[p, q]|`` as ``(p, q, value)``, strongest
    first; ``matrix`` ``[Ea, Eb]`` gives one list, ``[B, Ea, Eb]`` one list per instance."""
    if matrix.ndim == 3:
        return [top_pairs(m, k) for m in matrix]  # type: ignore[misc]
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be [Ea, Eb] or [B, Ea, Eb], got {list(matrix.shape)}")
    k = min(k, matrix.numel())
    order = matrix.abs().flatten().topk(k).indices
    cols = matrix.shape[1]
    return [(int(i) // cols, int(i) % cols, float(matrix.flatten()[i])) for i in order]


# -- Integrated Hessians ---------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def log_weight_gauss(m: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights of the m-point Gauss rule for ``∫₀¹ (−ln t) k(t) dt``.

    The recurrence of the orthogonal polynomials comes from a Stieltjes (Lanczos) procedure
    on a fine discretisation of the measure (t = u⁴ removes the log singularity, then 400
    Gauss–Legendre nodes in u), then Golub–Welsch; moments ``∫ tⁿ(−ln t) dt = 1/(n+1)²`` are
    reproduced to ~1e-15 for ``n < 2m``.
    """
    if m < 1:
        raise ValueError("the quadrature needs at least one node (n_steps >= 1)")
    u, w = np.polynomial.legendre.leggauss(400)
    u, w = (u + 1) / 2, w / 2
    t = u**4
    mass = w * 16 * u**3 * (-np.log(u))
    p_prev, p = np.zeros_like(t), np.full_like(t, 1 / math.sqrt(mass.sum()))
    alphas, betas = [], []
    beta = 0.0
    for _ in range(m):
        alpha = float(np.sum(mass * t * p * p))
        q = (t - alpha) * p - beta * p_prev
        beta = float(math.sqrt(np.sum(mass * q * q)))
        alphas.append(alpha)
        betas.append(beta)
        p_prev, p = p, q / beta
    jacobi = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
    nodes, vectors = np.linalg.eigh(jacobi)
    weights = mass.sum() * vectors[0] ** 2
    return tuple(nodes.tolist()), tuple(weights.tolist())


@dataclass(frozen=True)
class IntegratedHessiansResult:
    """``interactions``: ``Γ`` restricted to the a×b block, ``[B, *shape_a, *shape_b]``.
    ``delta``: ``[B]`` completeness error of the full Γ over all feature pairs."""

    interactions: Tensor
    delta: Tensor


def integrated_hessians(model: MultimodalModel, inputs: Mapping[str, Tensor], a: str, b: str,
                        *, target: Target, baselines: Baselines = "zeros",
                        means: Mapping[str, Tensor] | None = None, output: Output = "logits",
                        n_steps: int = 16, internal_batch_size: int | None = None,
                        chunk_size: int | None = None) -> IntegratedHessiansResult:
    """Integrated Hessians ``Γ`` (Janizek et al. 2021) between modalities ``a`` and ``b``.

    All modalities move along the straight path from the baseline (``feature_baselines``)
    to the input. ``n_steps``: nodes of the ``−ln t`` Gauss rule (block evaluations per
    instance); ``internal_batch_size``: path points evaluated at once (default: the batch,
    one node at a time, which was fastest on CPU).
    """
    _check_pair(model, a, b)
    features = model.embed(inputs)
    base = feature_baselines(model, inputs, features, baselines, means=means)
    delta = {n: features[n] - base[n] for n in features}
    batch = features[a].shape[0]
    onehot = _target_onehot(target, batch, model.spec.n_classes)
    ids = _ids(model, inputs)
    nodes, weights = (torch.tensor(v, dtype=torch.float32) for v in log_weight_gauss(n_steps))
    m = len(nodes)

    # path points, node-major: row k*B + i is instance i at t_k
    path = {n: (base[n].unsqueeze(0) + nodes.reshape(-1, *[1] * features[n].ndim)
                * delta[n].unsqueeze(0)).reshape(m * batch, *features[n].shape[1:])
            for n in features}
    rep = {n: v.repeat(m, *[1] * (v.ndim - 1)) for n, v in ids.items()}
    oh_rep = onehot.repeat(m, 1)

    def at_point(feats: Features, ids_: dict[str, Tensor], oh: Tensor) -> Tensor:
        return _block(_sample_fn(model, ids_, oh, output), feats, a, b, chunk_size)

    def grad_at_point(feats: Features, ids_: dict[str, Tensor], oh: Tensor) -> Tensor:
        f = _sample_fn(model, ids_, oh, output)
        return grad(lambda x: f({**feats, a: x}))(feats[a])

    sa, sb = features[a].shape[1:], features[b].shape[1:]
    row_node = torch.arange(m * batch).div(batch, rounding_mode="floor")
    row_instance = torch.arange(m * batch) % batch
    # Σ_k ω_k t_k H(z_k) and Σ_k ω_k ∇f(z_k), accumulated chunk by chunk (memory: one block
    # per instance and per row of a chunk, never m blocks per instance)
    integral = torch.zeros(batch, *sa, *sb)
    first_order = torch.zeros(batch, *sa)
    step = internal_batch_size or batch  # one node at a time: large vmaps are slower on CPU
    for start in range(0, m * batch, step):
        sl = slice(start, start + step)
        args = ({n: v[sl] for n, v in path.items()}, {n: v[sl] for n, v in rep.items()},
                oh_rep[sl])
        node = row_node[sl]
        blk = vmap(at_point)(*args).detach()
        scale = (weights[node] * nodes[node]).reshape(-1, *[1] * (blk.ndim - 1))
        integral.index_add_(0, row_instance[sl], scale * blk)
        if a == b:  # the first-order diagonal term exists only within a modality
            gr = vmap(grad_at_point)(*args).detach()
            w = weights[node].reshape(-1, *[1] * (gr.ndim - 1))
            first_order.index_add_(0, row_instance[sl], w * gr)
    da = delta[a].reshape(batch, *sa, *[1] * len(sb))
    db = delta[b].reshape(batch, *[1] * len(sa), *sb)
    gamma = da * db * integral
    if a == b:
        first = first_order * delta[a]
        n_a = math.prod(sa)
        flat = gamma.reshape(batch, n_a, n_a)
        flat = flat + torch.diag_embed(first.reshape(batch, n_a))
        gamma = flat.reshape(batch, *sa, *sb)
    err = _completeness_error(model, inputs, features, base, delta, onehot, output,
                              nodes, weights)
    return IntegratedHessiansResult(gamma, err)


def _completeness_error(model: MultimodalModel, inputs: Mapping[str, Tensor],
                        features: Features, base: Features, delta: Features, onehot: Tensor,
                        output: Output, nodes: Tensor, weights: Tensor) -> Tensor:
    """``Σ_k ω_k (g'(t_k) + t_k g''(t_k)) − (g(1) − g(0))`` per instance, ``g(t)=f(x'+tδ)``."""

    def one(feats0: Features, dlt: Features, ids: dict[str, Tensor], oh: Tensor) -> Tensor:
        f = _sample_fn(model, ids, oh, output)

        def g(t: Tensor) -> Tensor:
            return f({n: feats0[n] + t * dlt[n] for n in feats0})

        def g1(t: Tensor) -> Tensor:
            return jvp(g, (t,), (torch.ones_like(t),))[1]

        def terms(t: Tensor) -> Tensor:
            d1, d2 = jvp(g1, (t,), (torch.ones_like(t),))
            return d1 + t * d2

        path_sum = (weights * vmap(terms)(nodes)).sum()
        return path_sum - (g(torch.ones(())) - g(torch.zeros(())))

    return vmap(one)(base, delta, _ids(model, inputs), onehot).detach()
