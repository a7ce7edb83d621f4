"""Attention capture for ``torch.export`` programs (``.pt2``), which have no modules to hook.

The program's graph runs through a ``torch.fx.Interpreter`` that records

* the output of every last-axis softmax node whose ``nn_module_stack`` ends in an attention
  module (path or class name matching ``module_pattern``) or that came from a decomposed
  ``scaled_dot_product_attention`` — eager attention exports one such node per layer, and
  on HuggingFace BERT/ViLT exports these equal ``output_attentions`` exactly;
* the weights of every fused SDPA node (``aten.scaled_dot_product_attention`` and its
  flash / efficient / cuDNN variants), recomputed from that node's q, k, mask and scale.

SECURITY: ``torch.export.load`` unpickles, so an uploaded ``.pt2`` is only ever loaded (and
this function only ever run on it) inside the sandbox host process, never in the API.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.export import ExportedProgram
from torch.fx import Interpreter, Node
from torch.fx._pytree import tree_flatten_spec

from estimators.attention_core import (
    ATEN_SDPA,
    ATEN_SOFTMAX,
    DEFAULT_MODULE_PATTERN,
    AttentionTrace,
    Keeper,
    batch_size_of,
    recompute_attention,
)


def trace_exported_attention(program: ExportedProgram, inputs: Any, *,
                             layers: Sequence[int] | None = None,
                             heads: Sequence[int] | None = None,
                             dtype: torch.dtype | None = None,
                             module_pattern: str = DEFAULT_MODULE_PATTERN) -> AttentionTrace:
    """Run ``program`` on ``inputs`` and record its attention weights, in graph order.

    ``inputs``: a dict of keyword arguments (how a ``MultimodalModel`` module is exported:
    ``torch.export.export(module, (), kwargs=inputs)``), a tuple of positional ones, or one
    tensor. ``layers``/``heads``/``dtype`` as in ``capture_attention``. ``module_pattern``
    (a case-insensitive regex) says which modules' softmax outputs are attention weights.
    Weights kept as ``[B*heads, N, N]`` in the graph (MultiheadAttention's explicit path)
    are split by the batch size of the first input tensor.
    """
    args, kwargs = _as_call(inputs)
    try:
        flat = tree_flatten_spec((args, kwargs), program.call_spec.in_spec)
    except Exception as exc:
        raise ValueError(f"inputs do not match the exported program's signature "
                         f"{program.call_spec.in_spec}: {exc}") from exc
    keeper = Keeper(layers, heads, dtype, batch_size_of(inputs))
    interpreter = _AttentionInterpreter(_unlifted(program), keeper,
                                        re.compile(module_pattern, re.IGNORECASE))
    with torch.no_grad():   # the graph's pytree codegen rebuilds the output structure
        output = interpreter.run(*flat)
    return keeper.finish(output)


def capture_exported_attention(program: ExportedProgram, inputs: Any, *,
                               layers: Sequence[int] | None = None,
                               heads: Sequence[int] | None = None,
                               dtype: torch.dtype | None = None) -> list[Tensor]:
    """``capture_attention`` for a loaded ``torch.export`` program (sandbox host only)."""
    return trace_exported_attention(program, inputs, layers=layers, heads=heads,
                                    dtype=dtype).attentions


_UNLIFTED: weakref.WeakKeyDictionary[ExportedProgram, torch.nn.Module] = (
    weakref.WeakKeyDictionary())


def _unlifted(program: ExportedProgram) -> torch.nn.Module:
    """``program.module()``, built once per program: building it costs as much as a forward."""
    module = _UNLIFTED.get(program)
    if module is None:
        module = _UNLIFTED[program] = program.module()
    return module


def _as_call(inputs: Any) -> tuple[tuple, dict]:
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, tuple | list):
        return tuple(inputs), {}
    return (inputs,), {}


class _AttentionInterpreter(Interpreter):
    def __init__(self, module: torch.nn.Module, keeper: Keeper, pattern: re.Pattern) -> None:
        super().__init__(module)
        self.keeper = keeper
        self.pattern = pattern

    def run_node(self, n: Node) -> Any:
        if n.op == "call_function" and n.target in ATEN_SDPA:
            if not self.keeper.wants_next():
                self.keeper.skip()
                return super().run_node(n)
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            weights, result = recompute_attention(n.target, args, kwargs)
            self.keeper.add(_module_path(n) or n.name, weights)
            return super().run_node(n) if result is None else result
        out = super().run_node(n)
        if n.op == "call_function" and n.target in ATEN_SOFTMAX and \
                self._is_attention_softmax(n, out):
            if self.keeper.wants_next():
                self.keeper.add(_module_path(n) or n.name, out)
            else:
                self.keeper.skip()
        return out

    def _is_attention_softmax(self, n: Node, out: Any) -> bool:
        if not isinstance(out, Tensor) or out.ndim < 2:
            return False
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        if dim not in (-1, out.ndim - 1):
            return False
        origin = f"{n.meta.get('torch_fn', '')} {n.meta.get('original_aten', '')}"
        if "scaled_dot_product" in origin:
            return True
        stack = n.meta.get("nn_module_stack") or {}
        if not stack:
            return False
        path, kind = list(stack.values())[-1]
        return bool(self.pattern.search(f"{path} {str(kind).rsplit('.', 1)[-1]}"))


def _module_path(n: Node) -> str:
    stack = n.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""

