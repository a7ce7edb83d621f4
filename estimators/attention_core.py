"""Shared pieces of attention capture: the recomputed SDPA weights and what a capture keeps.

Used by ``estimators.attention`` (eager models) and ``estimators.attention_export``
(``torch.export`` programs); import the public names from ``estimators.attention``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

DEFAULT_MODULE_PATTERN = r"attn|attention"
"""Modules whose path or class matches this (case-insensitive) are attention modules."""


@dataclass(frozen=True)
class AttentionTrace:
    """What one captured forward pass saw.

    ``attentions[i]`` is ``[B, heads, Nq, Nk]`` (rows sum to 1 over the keys), recorded at
    ``names[i]`` (module path, or ``output.attentions[j]`` for a model that returns its own),
    and is attention layer number ``layers[i]`` of the ``n_layers`` the forward pass ran, in
    forward order. ``output`` is whatever the model returned.
    """

    output: Any
    attentions: list[Tensor]
    names: list[str]
    layers: list[int]
    n_layers: int


def sdpa_weights(query: Tensor, key: Tensor, attn_mask: Tensor | None = None,
                 is_causal: bool = False, scale: float | None = None,
                 enable_gqa: bool = False) -> Tensor:
    """The weights ``scaled_dot_product_attention`` applies to the values, recomputed.

    ``softmax(q kᵀ · scale + mask)`` with ``scale = 1/sqrt(E)`` by default, a boolean
    ``attn_mask`` meaning "may attend" (False → -inf), a float mask added to the scores, and
    ``is_causal`` the top-left-aligned lower-triangular mask, exactly as PyTorch defines SDPA
    (Vaswani et al. 2017). With ``enable_gqa`` the key heads are repeated to the query heads
    (grouped-query attention, Ainslie et al. 2023). Computed in at least float32; a row whose
    keys are all masked attends to nothing (zeros, where softmax would give NaN).
    Shapes: query ``[..., Hq, L, E]``, key ``[..., Hk, S, E]`` → ``[..., Hq, L, S]``.
    """
    dtype = torch.promote_types(query.dtype, torch.float32)
    q, k = query.to(dtype), key.to(dtype)
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)   # a fresh tensor: edited in place below
    n_q, n_k = scores.shape[-2], scores.shape[-1]
    masked = is_causal or attn_mask is not None
    if is_causal:
        causal = torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).tril()
        scores = _add(scores, _additive(causal, dtype))
    if attn_mask is not None:
        scores = _add(scores, _additive(attn_mask, dtype) if attn_mask.dtype == torch.bool
                      else attn_mask.to(dtype))
    weights = torch.softmax(scores, dim=-1)
    return weights.nan_to_num_(0.0) if masked else weights


def _add(scores: Tensor, bias: Tensor) -> Tensor:
    """``scores + bias``, in place unless the bias broadcasts to a larger shape."""
    fits = bias.ndim <= scores.ndim and all(
        b in (1, s) for b, s in zip(reversed(bias.shape), reversed(scores.shape), strict=False))
    return scores.add_(bias) if fits else scores + bias


def _additive(keep: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean "may attend" mask as 0 / -inf in its own (small, broadcast) shape: adding it
    to the scores is one cheap pass, where ``masked_fill`` with a broadcast mask is not."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep,
                                                                                 -math.inf)


_aten = torch.ops.aten
ATEN_SOFTMAX = frozenset({_aten.softmax.int, _aten._softmax.default, _aten._safe_softmax.default})
"""Softmax as it appears in exported graphs (and when unflattened programs run)."""
SDPA = torch._C._nn.scaled_dot_product_attention
"""``torch.nn.functional.scaled_dot_product_attention`` (the same builtin object)."""
ATEN_SDPA = frozenset({
    _aten.scaled_dot_product_attention.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
})
"""Fused attention ops of exported graphs: the weights are recomputed from q and k."""
_SINGLE_OUTPUT = frozenset({SDPA, _aten.scaled_dot_product_attention.default})
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale",
              "enable_gqa")


def recompute_attention(op: Any, args: tuple, kwargs: dict) -> tuple[Tensor, Tensor | None]:
    """Weights of one SDPA call (``SDPA`` or an ``ATEN_SDPA`` op), and the call's result.

    The result is ``weights @ value`` where that is the whole answer (no dropout, an op that
    returns one tensor), so capture computes the scores once instead of twice; it matches the
    fused kernel to float rounding. ``None`` means: run the original op for the result.
    """
    if op is SDPA:
        bound = {**dict(zip(_SDPA_ARGS, args, strict=False)), **kwargs}
    else:
        bound = {}
        for i, arg in enumerate(op._schema.arguments):
            if i < len(args) and not arg.kwarg_only:
                bound[arg.name] = args[i]
            elif arg.name in kwargs:
                bound[arg.name] = kwargs[arg.name]
            elif arg.has_default_value():
                bound[arg.name] = arg.default_value
    mask = bound.get("attn_mask", bound.get("attn_bias"))
    weights = sdpa_weights(bound["query"], bound["key"], mask,
                           bool(bound.get("is_causal", False)), bound.get("scale"),
                           bool(bound.get("enable_gqa", False)))
    if op not in _SINGLE_OUTPUT or bound.get("dropout_p", 0.0):
        return weights, None
    value = bound["value"]
    if value.ndim >= 3 and value.shape[-3] != weights.shape[-3]:   # grouped-query attention
        value = value.repeat_interleave(weights.shape[-3] // value.shape[-3], dim=-3)
    return weights, (weights @ value.to(weights.dtype)).to(value.dtype)


def as_bhqk(weights: Tensor, batch_size: int | None) -> Tensor:
    """Bring recorded weights to ``[B, heads, Nq, Nk]``.

    Attention code keeps heads in many layouts: ``[B, H, Nq, Nk]`` (SDPA, MultiheadAttention
    with per-head weights), ``[B*H, Nq, Nk]`` (the explicit MultiheadAttention path inside an
    exported graph), ``[B, G, H, Nq, Nk]`` (grouped heads). Everything between the batch and
    the last two axes becomes the head axis.
    """
    if weights.ndim == 2:
        return weights[None, None]
    if weights.ndim == 3:
        lead = weights.shape[0]
        if batch_size and lead % batch_size == 0:
            return weights.reshape(batch_size, lead // batch_size, *weights.shape[-2:])
        return weights[None]
    if weights.ndim > 4:
        return weights.flatten(1, -3)
    return weights


def batch_size_of(inputs: Any) -> int | None:
    """Batch size of the first tensor in ``inputs`` (a tensor, mapping or sequence)."""
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0]) if inputs.ndim else None
    if isinstance(inputs, Mapping):
        values = list(inputs.values())
    elif isinstance(inputs, list | tuple):
        values = list(inputs)
    else:
        return None
    for value in values:
        found = batch_size_of(value)
        if found is not None:
            return found
    return None


class Keeper:
    """Decides, layer by layer as a forward pass runs, which attention maps to keep and how.

    ``layers`` indexes the attention layers in forward order (negative counts from the end,
    which means every layer is recorded until the end is known); ``heads`` selects heads of
    every kept layer; ``dtype`` (e.g. ``torch.float16``) halves the memory of what is kept.
    Skipping a layer early lets SDPA capture skip recomputing its weights altogether.
    """

    def __init__(self, layers: Sequence[int] | None, heads: Sequence[int] | None,
                 dtype: torch.dtype | None, batch_size: int | None) -> None:
        self.layers = None if layers is None else [int(i) for i in layers]
        self.heads = None if heads is None else [int(h) for h in heads]
        self.dtype = dtype
        self.batch_size = batch_size
        self._defer = self.layers is not None and any(i < 0 for i in self.layers)
        self._wanted = None if self.layers is None else set(self.layers)
        self.seen = 0
        self._kept: list[tuple[int, str, Tensor]] = []

    def wants_next(self) -> bool:
        """Whether the next attention layer to run will be kept."""
        return self._wanted is None or self._defer or self.seen in self._wanted

    def skip(self) -> None:
        """Count a layer without recording it (only when ``wants_next()`` is False)."""
        self.seen += 1

    def add(self, name: str, weights: Tensor) -> None:
        """Record one attention layer's weights (any head layout, see ``as_bhqk``)."""
        index = self.seen
        self.seen += 1
        if self._wanted is not None and not self._defer and index not in self._wanted:
            return
        w = as_bhqk(weights.detach(), self.batch_size)
        if self.heads is not None:
            bad = [h for h in self.heads if not -w.shape[1] <= h < w.shape[1]]
            if bad:
                raise ValueError(f"heads={self.heads}: attention layer {index} ({name}) has "
                                 f"{w.shape[1]} heads, so {bad} do not exist; choose heads "
                                 f"in 0..{w.shape[1] - 1}")
            w = w[:, self.heads]
        if self.dtype is not None:
            w = w.to(self.dtype)
        self._kept.append((index, name, w))

    def finish(self, output: Any) -> AttentionTrace:
        """The trace, with negative layer indices resolved now that the count is known."""
        kept = self._kept
        if self.layers is not None:
            n = self.seen
            bad = [i for i in self.layers if not -n <= i < n]
            if bad:
                raise ValueError(f"layers={self.layers}: the forward pass ran {n} attention "
                                 f"layers, so {bad} do not exist; choose layers in "
                                 f"0..{n - 1} (or -{n}..-1)" if n else
                                 f"layers={self.layers}: the forward pass ran no attention "
                                 "layers")
            wanted = {i % n for i in self.layers}
            kept = [entry for entry in kept if entry[0] in wanted]
        return AttentionTrace(output=output, attentions=[w for _, _, w in kept],
                              names=[name for _, name, _ in kept],
                              layers=[i for i, _, _ in kept], n_layers=self.seen)
