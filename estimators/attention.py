"""Attention maps of models we did not write: capture, rollout, head summaries, cross-modal share.

VL-InterpreT-style attention analysis (Aflalo et al., CVPR 2022) for any PyTorch model,
without the user changing it:

* ``torch.nn.MultiheadAttention`` averages heads by default and skips the weights on its
  fast path; during capture every instance is called with ``need_weights=True,
  average_attn_weights=False`` and hands its caller back exactly what it asked for.
* ``torch.nn.functional.scaled_dot_product_attention`` never returns weights; a
  ``TorchFunctionMode`` intercepts every call (however the function was imported),
  recomputes ``softmax(q kᵀ · scale + mask)`` from the same q, k, mask, ``is_causal``, scale
  (and GQA), and answers the call with ``weights @ v`` (equal to the fused kernel's result to
  float rounding, and cheaper than running both).
* Hand-written attention (``softmax(q kᵀ/√d) v`` in Python, e.g. HuggingFace ``eager``):
  the same mode records every last-axis softmax called while the innermost running module's
  path or class matches ``module_pattern`` (default ``attn|attention``).
* HuggingFace-style outputs carrying ``attentions`` (``output_attentions=True`` with
  ``attn_implementation="eager"``) are used when no module above ran. transformers' default
  ``sdpa`` implementation returns no attentions, but its SDPA calls are captured anyway.
* ``torch.export`` programs (``.pt2``): either unflattened (``torch.export.unflatten``, whose
  graphs call the aten softmax / SDPA ops the mode also sees) and passed here, or given as
  the ``ExportedProgram`` itself to ``trace_exported_attention``
  (``estimators.attention_export``). Loading them unpickles: only inside the sandbox host.

Everything is restored on exit, also when the forward pass raises. The views (rollout,
head summaries, cross-modal share, query grids, the API payload) live in
``estimators.attention_views`` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from estimators.attention_core import (
    ATEN_SDPA,
    ATEN_SOFTMAX,
    DEFAULT_MODULE_PATTERN,
    SDPA,
    AttentionTrace,
    Keeper,
    batch_size_of,
    recompute_attention,
    sdpa_weights,
)
from estimators.attention_export import capture_exported_attention, trace_exported_attention
from estimators.attention_views import (
    attention_response,
    cross_modal_share,
    explain_attention,
    head_summary,
    padding_positions,
    position_labels,
    query_grid,
    rollout,
    validate_token_layout,
)
from estimators.model import MultimodalModel

__all__ = [
    "AttentionTrace",
    "attention_response",
    "capture_attention",
    "capture_exported_attention",
    "cross_modal_share",
    "explain_attention",
    "head_summary",
    "padding_positions",
    "position_labels",
    "query_grid",
    "rollout",
    "sdpa_weights",
    "trace_attention",
    "trace_exported_attention",
    "validate_token_layout",
]

_SOFTMAX = frozenset({torch.softmax, torch.nn.functional.softmax, Tensor.softmax,
                      *ATEN_SOFTMAX})


def capture_attention(model: nn.Module, inputs: Any, *, layers: Sequence[int] | None = None,
                      heads: Sequence[int] | None = None, dtype: torch.dtype | None = None,
                      module_pattern: str = DEFAULT_MODULE_PATTERN) -> list[Tensor]:
    """Attention weights of every attention layer one forward pass runs, in forward order.

    Returns one ``[B, heads, Nq, Nk]`` tensor per kept layer (``Nq != Nk`` for
    cross-attention); each row is a distribution over the keys. ``model`` is a
    ``MultimodalModel`` (``inputs`` a dict keyed by modality) or any ``nn.Module`` (``inputs``
    a dict of keyword arguments, a tuple of positional ones, or one tensor). ``layers`` keeps
    only those layer indices (negative from the end), ``heads`` only those heads of each,
    ``dtype=torch.float16`` halves storage: bounded memory for long sequences.
    ``module_pattern`` (case-insensitive regex on module path and class) says inside which
    modules an explicit softmax is attention. Runs under ``torch.no_grad``; see
    ``trace_attention`` for the model's output and layer names.
    """
    return trace_attention(model, inputs, layers=layers, heads=heads, dtype=dtype,
                           module_pattern=module_pattern).attentions


def trace_attention(model: nn.Module, inputs: Any, *, layers: Sequence[int] | None = None,
                    heads: Sequence[int] | None = None, dtype: torch.dtype | None = None,
                    module_pattern: str = DEFAULT_MODULE_PATTERN) -> AttentionTrace:
    """``capture_attention`` plus the model's output and where each map was recorded."""
    keeper = Keeper(layers, heads, dtype, batch_size_of(inputs))
    root = model.module if isinstance(model, MultimodalModel) else model
    pattern = re.compile(module_pattern, re.IGNORECASE)
    with _capturing(root, keeper, pattern), torch.no_grad():
        output = _call(model, inputs)
    if keeper.seen == 0:
        for i, weights in enumerate(_returned_attentions(output)):
            keeper.add(f"output.attentions[{i}]", weights)
    return keeper.finish(output)


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(model, MultimodalModel):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def _returned_attentions(output: Any) -> list[Tensor]:
    """``attentions`` of a HuggingFace-style output (attribute or key), if it has any."""
    found = output.get("attentions") if isinstance(output, Mapping) else getattr(
        output, "attentions", None)
    if not found:
        return []
    return [a for a in found if isinstance(a, Tensor)]


@contextlib.contextmanager
def _capturing(root: nn.Module, keeper: Keeper, pattern: re.Pattern) -> Iterator[None]:
    """Hooks on every MultiheadAttention, module-path tracking, SDPA/softmax interception.

    Module hooks are shared by every thread that runs the model, so each hook acts only for
    the capturing thread: a concurrent plain forward (or capture) elsewhere is untouched.
    """
    path: list[tuple[str, bool]] = []   # (module path, whether it is an attention module)
    owner = threading.get_ident()

    def enter(_mod: nn.Module, _args: tuple, entry: tuple[str, bool]) -> None:
        if threading.get_ident() == owner:
            path.append(entry)

    def leave(_mod: nn.Module, _args: tuple, _out: Any) -> None:
        if path and threading.get_ident() == owner:
            path.pop()

    with contextlib.ExitStack() as stack:
        for name, module in root.named_modules():
            entry = (name, bool(pattern.search(f"{name} {type(module).__name__}")))
            stack.callback(module.register_forward_pre_hook(
                functools.partial(enter, entry=entry)).remove)
            stack.callback(module.register_forward_hook(leave, always_call=True).remove)
            if isinstance(module, nn.MultiheadAttention):
                _hook_multihead(stack, module, name, keeper, owner)
        stack.enter_context(_Interceptor(keeper, path))
        yield


def _hook_multihead(stack: contextlib.ExitStack, module: nn.MultiheadAttention, name: str,
                    keeper: Keeper, owner: int) -> None:
    """Ask the module for per-head weights, record them, answer the caller as it asked.
    A layer that will not be kept runs exactly as the caller asked (no weights computed)."""
    signature = inspect.signature(type(module).forward)
    asked: list[tuple[bool, bool] | None] = []   # None: this call is not recorded

    def before(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if threading.get_ident() != owner:
            return None
        if not keeper.wants_next():
            asked.append(None)
            return None
        bound = signature.bind(mod, *args, **kwargs)
        bound.apply_defaults()
        asked.append((bool(bound.arguments["need_weights"]),
                      bool(bound.arguments["average_attn_weights"])))
        bound.arguments["need_weights"] = True
        bound.arguments["average_attn_weights"] = False
        return bound.args[1:], bound.kwargs

    def after(_mod: nn.Module, _args: tuple, _kwargs: dict, output: tuple) -> tuple | None:
        if threading.get_ident() != owner:
            return None
        wanted = asked.pop()
        if wanted is None:
            keeper.skip()
            return None
        need_weights, average = wanted
        attn_output, weights = output
        keeper.add(name, weights)
        if not need_weights:
            return attn_output, None
        return attn_output, weights.mean(dim=-3) if average else weights

    stack.callback(module.register_forward_pre_hook(before, with_kwargs=True).remove)
    stack.callback(module.register_forward_hook(after, with_kwargs=True).remove)


class _Interceptor(TorchFunctionMode):
    """Records the weights of every ``scaled_dot_product_attention`` call, and every
    last-axis softmax inside an attention module, while active.

    A torch-function mode sees the call however the caller imported the function, is local
    to the current thread, and also turns off MultiheadAttention's and
    TransformerEncoderLayer's fused fast paths (they bypass the Python module hooks).
    Functions it hands on run with the mode off, so MultiheadAttention's own softmax (inside
    ``F.multi_head_attention_forward``) is not seen twice.
    """

    def __init__(self, keeper: Keeper, path: list[tuple[str, bool]]) -> None:
        super().__init__()
        self.keeper = keeper
        self.path = path

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is SDPA or func in ATEN_SDPA:
            if not self.keeper.wants_next():
                self.keeper.skip()
                return func(*args, **kwargs)
            weights, result = recompute_attention(func, args, kwargs)
            self.keeper.add(self._where("scaled_dot_product_attention"), weights)
            return func(*args, **kwargs) if result is None else result
        out = func(*args, **kwargs)
        if func in _SOFTMAX and self.path and self.path[-1][1] and _last_axis(args, kwargs):
            if self.keeper.wants_next():
                self.keeper.add(self._where("softmax"), out)
            else:
                self.keeper.skip()
        return out

    def _where(self, fallback: str) -> str:
        return self.path[-1][0] or fallback if self.path else fallback


def _last_axis(args: tuple, kwargs: dict) -> bool:
    """Whether a softmax call normalises over the last axis of an at least 2-d tensor."""
    x = args[0] if args else kwargs.get("input")
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    return isinstance(x, Tensor) and x.ndim >= 2 and dim in (-1, x.ndim - 1)
