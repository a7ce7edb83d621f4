"""The model contract: what a multimodal model is to crosslens.

A model is any ``nn.Module`` called as ``module(**inputs)`` with ``inputs`` a
``dict[str, Tensor]`` keyed by modality name (batch first) that returns logits
``[B, n_classes]``. Its ``ModelSpec`` says what each modality is (kind, shape, dtype) and,
for token modalities, which submodule produces the embeddings that attributions are taken
at: integer ids have no gradient, so every estimator works in *feature space*, where a token
modality is its embedding output ``[B, T, D]`` and every other modality is its raw tensor.

``MultimodalModel.embed`` maps inputs to feature space and ``forward_embedded`` runs the
model from feature space (a forward hook substitutes the embedding output), so estimators
see one differentiable function ``f(features) -> logits`` for any architecture.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

Kind = Literal["image", "text", "timeseries", "tabular", "audio"]
DType = Literal["float32", "float64", "float16", "bfloat16", "int64", "int32"]
Output = Literal["logits", "log_softmax", "softmax"]

TOKEN_KINDS: frozenset[str] = frozenset({"text"})
_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
}


class ModalitySpec(BaseModel):
    """One input modality: its name, kind (how the UI draws it), shape without batch, dtype."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: Kind
    shape: tuple[int | None, ...] = Field(min_length=1, max_length=4)
    dtype: DType = "float32"
    embedding: str | None = None
    vocab: list[str] | None = None
    pad_id: int | None = None
    mask_id: int | None = None
    display: dict[str, Any] = Field(default_factory=dict)

    @field_validator("shape")
    @classmethod
    def _positive_dims(cls, shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        for dim in shape:
            if dim is not None and dim <= 0:
                raise ValueError(f"shape {list(shape)} has a non-positive dimension; "
                                 "use a positive size, or null for a variable length")
        return shape

    @model_validator(mode="after")
    def _token_rules(self) -> ModalitySpec:
        if self.is_token:
            if self.dtype not in ("int64", "int32"):
                raise ValueError(f"modality {self.name!r} is kind 'text' (token ids), so its "
                                 f"dtype must be int64 or int32, not {self.dtype}")
            if not self.embedding:
                raise ValueError(f"modality {self.name!r} is kind 'text' but names no "
                                 "'embedding' submodule; token ids have no gradient, so "
                                 "attributions are taken at that submodule's output")
            if len(self.shape) != 1:
                raise ValueError(f"modality {self.name!r}: token ids have shape [T], "
                                 f"got {list(self.shape)}")
            n_vocab = len(self.vocab) if self.vocab is not None else None
            for field in ("pad_id", "mask_id"):
                value = getattr(self, field)
                if value is not None and (value < 0 or (n_vocab is not None and value >= n_vocab)):
                    raise ValueError(f"modality {self.name!r}: {field}={value} is outside the "
                                     f"vocabulary of {n_vocab} tokens")
        else:
            if self.dtype in ("int64", "int32"):
                raise ValueError(f"modality {self.name!r} is kind {self.kind!r}, which needs a "
                                 f"floating dtype, not {self.dtype}")
            if self.embedding is not None:
                raise ValueError(f"modality {self.name!r}: 'embedding' applies only to kind "
                                 "'text'; continuous inputs are attributed directly")
            fixed = self.shape[:-1] if self.kind == "timeseries" else self.shape
            if None in fixed:
                raise ValueError(f"modality {self.name!r}: only token sequences and the time "
                                 f"axis of a time series may have variable length (null), got "
                                 f"{list(self.shape)}")
        return self

    @property
    def is_token(self) -> bool:
        """True for integer-id modalities, attributed at their embedding output."""
        return self.kind in TOKEN_KINDS

    @property
    def torch_dtype(self) -> torch.dtype:
        return _TORCH_DTYPES[self.dtype]


class TokenSegment(BaseModel):
    """Which positions of a transformer's joint sequence belong to which modality."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: str | None
    role: str = Field(min_length=1, max_length=32)
    start: int = Field(ge=0)
    length: int = Field(ge=1)
    grid: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _grid_matches(self) -> TokenSegment:
        if self.grid is not None and self.grid[0] * self.grid[1] != self.length:
            raise ValueError(f"token segment {self.role!r}: grid {list(self.grid)} has "
                             f"{self.grid[0] * self.grid[1]} cells but length is {self.length}")
        return self

    @property
    def stop(self) -> int:
        return self.start + self.length


class ModelSpec(BaseModel):
    """Everything crosslens needs to know about a model besides its weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: list[ModalitySpec] = Field(min_length=1, max_length=16)
    classes: list[str] = Field(min_length=1)
    token_layout: list[TokenSegment] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        names = [m.name for m in self.modalities]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate modality names: {duplicates}; names must be unique")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("class names must be unique")
        if self.token_layout:
            ordered = sorted(self.token_layout, key=lambda s: s.start)
            for seg in ordered:
                if seg.modality is not None and seg.modality not in names:
                    raise ValueError(f"token_layout names modality {seg.modality!r}, "
                                     f"which is not one of {names}")
            for prev, nxt in itertools.pairwise(ordered):
                if nxt.start < prev.stop:
                    raise ValueError(f"token_layout segments {prev.role!r} and {nxt.role!r} "
                                     "overlap")
        return self

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modalities]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def modality(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(f"no modality {name!r}; the model has {self.names}")

    def example_inputs(self, batch_size: int = 2, *, seq_len: int = 8,
                       seed: int = 0) -> dict[str, Tensor]:
        """Random inputs with the spec's shapes and dtypes (variable lengths set to seq_len)."""
        gen = torch.Generator().manual_seed(seed)
        out: dict[str, Tensor] = {}
        for m in self.modalities:
            shape = (batch_size, *(seq_len if d is None else d for d in m.shape))
            if m.is_token:
                high = len(m.vocab) if m.vocab else 2
                out[m.name] = torch.randint(0, high, shape, generator=gen, dtype=m.torch_dtype)
            else:
                out[m.name] = torch.randn(shape, generator=gen).to(m.torch_dtype)
        return out


class InputError(ValueError):
    """Inputs do not match the model's spec; the message says what to change."""


def apply_output(logits: Tensor, output: Output) -> Tensor:
    """Map logits to the quantity being explained (``logits``, ``log_softmax``, ``softmax``)."""
    if output == "logits":
        return logits
    if output == "log_softmax":
        return torch.log_softmax(logits, dim=-1)
    if output == "softmax":
        return torch.softmax(logits, dim=-1)
    raise ValueError(f"output must be 'logits', 'log_softmax' or 'softmax', not {output!r}")


def select_target(out: Tensor, target: int | Tensor) -> Tensor:
    """Pick one class per row of ``out`` ``[B, C]``: ``target`` is an int or an int ``[B]``."""
    if isinstance(target, int):
        return out[..., target]
    target = torch.as_tensor(target, device=out.device)
    if target.ndim == 0:
        return out[..., int(target)]
    return out.gather(-1, target.long().reshape(-1, 1)).squeeze(-1)


class MultimodalModel(nn.Module):
    """An ``nn.Module`` called as ``module(**inputs)`` together with its ``ModelSpec``.

    ``model(inputs)`` checks the inputs against the spec and returns logits ``[B, C]``.
    The wrapped module is put in eval mode: explanations are of the deployed model.
    """

    def __init__(self, module: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.module = module.eval()
        self.spec = spec
        for m in spec.modalities:
            if m.is_token:
                self.embedding_module(m.name)  # fail early with a clear message

    # -- checks ---------------------------------------------------------------------------

    def check_inputs(self, inputs: Mapping[str, Tensor]) -> None:
        """Raise ``InputError`` saying exactly which modality has the wrong name/shape/dtype."""
        expected, given = set(self.spec.names), set(inputs)
        if expected != given:
            missing, extra = sorted(expected - given), sorted(given - expected)
            raise InputError(f"inputs must be keyed by modality name {self.spec.names}; "
                             f"missing {missing}, unexpected {extra}")
        batch = None
        for m in self.spec.modalities:
            x = inputs[m.name]
            if not isinstance(x, Tensor):
                raise InputError(f"{m.name}: expected a tensor, got {type(x).__name__}")
            if x.ndim != len(m.shape) + 1:
                raise InputError(f"{m.name}: expected shape [B, {_fmt_shape(m.shape)}] "
                                 f"({len(m.shape) + 1} dims), got {list(x.shape)}")
            for axis, (want, got) in enumerate(zip(m.shape, x.shape[1:], strict=True), 1):
                if want is not None and want != got:
                    raise InputError(f"{m.name}: dimension {axis} must be {want} "
                                     f"(shape [B, {_fmt_shape(m.shape)}]), got {list(x.shape)}")
            if m.is_token and x.dtype not in (torch.int64, torch.int32):
                raise InputError(f"{m.name}: token ids must be int64, got {x.dtype}")
            if not m.is_token and not x.is_floating_point():
                raise InputError(f"{m.name}: expected a floating tensor ({m.dtype}), "
                                 f"got {x.dtype}")
            if batch is None:
                batch = x.shape[0]
            elif x.shape[0] != batch:
                raise InputError(f"all modalities need the same batch size; {m.name} has "
                                 f"{x.shape[0]}, others {batch}")

    # -- forward --------------------------------------------------------------------------

    def forward(self, inputs: Mapping[str, Tensor], *, check: bool = True) -> Tensor:
        if check:
            self.check_inputs(inputs)
        return self.module(**inputs)

    def embedding_module(self, name: str) -> nn.Module:
        """The submodule whose output is the token modality ``name``'s feature space."""
        m = self.spec.modality(name)
        if not m.is_token:
            raise KeyError(f"modality {name!r} is kind {m.kind!r}, not a token modality")
        try:
            return self.module.get_submodule(m.embedding)
        except AttributeError as exc:
            raise InputError(f"modality {name!r}: the model has no submodule "
                             f"{m.embedding!r} (spec 'embedding'); check the path") from exc

    @property
    def token_names(self) -> list[str]:
        return [m.name for m in self.spec.modalities if m.is_token]

    def embed(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Inputs in feature space: embedding outputs ``[B, T, D]`` for token modalities
        (captured with forward hooks during one forward pass), raw tensors otherwise."""
        features = {k: v for k, v in inputs.items() if k not in self.token_names}
        if not self.token_names:
            return features
        captured: dict[str, Tensor] = {}
        with contextlib.ExitStack() as stack:
            for name in self.token_names:
                def hook(_mod: nn.Module, _args: Any, out: Tensor, name: str = name) -> None:
                    captured[name] = out.detach()
                handle = self.embedding_module(name).register_forward_hook(hook)
                stack.callback(handle.remove)
            with torch.no_grad():
                self.module(**inputs)
        missing = [n for n in self.token_names if n not in captured]
        if missing:
            raise InputError(f"embedding submodule of {missing} was not called in forward")
        return {**features, **{n: captured[n] for n in self.token_names}}

    @contextlib.contextmanager
    def substituted_embeddings(self, embedded: Mapping[str, Tensor]) -> Iterator[None]:
        """Within the block, token modalities' embedding submodules return ``embedded[name]``."""
        with contextlib.ExitStack() as stack:
            for name in self.token_names:
                if name not in embedded:
                    continue
                def hook(_mod: nn.Module, _args: Any, _out: Tensor, name: str = name) -> Tensor:
                    return embedded[name]
                handle = self.embedding_module(name).register_forward_hook(hook)
                stack.callback(handle.remove)
            yield

    def forward_embedded(self, inputs: Mapping[str, Tensor],
                         features: Mapping[str, Tensor]) -> Tensor:
        """Logits from feature space: ``features`` overrides continuous inputs directly and
        token modalities through their embedding submodule. ``inputs`` supplies the token ids
        (still needed for masks and shapes) and any modality absent from ``features``."""
        raw = {k: (features[k] if k in features and k not in self.token_names else v)
               for k, v in inputs.items()}
        with self.substituted_embeddings(features):
            return self.module(**raw)


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return ", ".join("T" if d is None else str(d) for d in shape)
