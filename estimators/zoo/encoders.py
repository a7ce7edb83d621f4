"""Per-modality encoders, one per modality kind, for the zoo's architectures.

Two families:

- *vector encoders* (``vector_encoder``) map one modality to a vector ``[B, dim]`` for the
  fusion baselines: image -> small CNN, text -> token embedding + masked mean pooling,
  time series -> 1-D CNN, tabular -> MLP;
- *tokenizers* (``tokenizer``) map one modality to a token sequence ``[B, n, dim]`` for the
  multimodal transformer: image -> non-overlapping patches, text -> token embeddings,
  time series -> 1-D conv patches, tabular -> one token per feature (FT-Transformer style,
  Gorishniy et al. 2021).

Every token encoder keeps its ``nn.Embedding`` at the attribute ``embed``, so a model's
spec names ``encoders.<modality>.embed`` as the embedding submodule. Tabular encoders
standardise with buffers ``loc`` / ``scale`` (saved with the weights, set from training
data by ``set_standardisation``) so datasets stay in their display units (bpm, mmHg, ...).
Activations are smooth (SiLU, GELU, tanh): ReLU networks have zero second derivatives
almost everywhere and would show empty Hessian interaction maps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

KINDS = ("image", "text", "timeseries", "tabular")


def check_modality(m: Mapping[str, Any]) -> None:
    """Clear errors for a malformed modality entry of an architecture's ``params``."""
    for key in ("name", "kind", "shape"):
        if key not in m:
            raise ValueError(f"modality entry {dict(m)} lacks {key!r}")
    if m["kind"] not in KINDS:
        raise ValueError(f"modality {m['name']!r}: kind {m['kind']!r} has no zoo encoder; "
                         f"the zoo supports {list(KINDS)}")
    if m["kind"] == "text" and "vocab_size" not in m:
        raise ValueError(f"text modality {m['name']!r} needs 'vocab_size'")


class Standardise(nn.Module):
    """(x - loc) / scale with saved buffers, so inputs keep their physical units."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.loc) / self.scale


class ImageEncoder(nn.Module):
    """[B, C, H, W] -> [B, dim]: two smooth conv layers, average pooling, linear."""

    def __init__(self, shape: list[int], dim: int) -> None:
        super().__init__()
        channels = shape[0]
        self.net = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(16 * 2 * 2, dim), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TextEncoder(nn.Module):
    """[B, T] ids -> [B, dim]: embedding (``embed``), mean over non-pad tokens, linear."""

    def __init__(self, vocab_size: int, dim: int, pad_id: int | None) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())

    def forward(self, ids: Tensor) -> Tensor:
        emb = self.embed(ids)
        if self.pad_id is None:
            return self.proj(emb.mean(-2))
        keep = (ids != self.pad_id).unsqueeze(-1).to(emb.dtype)
        return self.proj((emb * keep).sum(-2) / keep.sum(-2).clamp_min(1.0))


class TimeseriesEncoder(nn.Module):
    """[B, C, L] -> [B, dim]: two strided smooth 1-D convs, adaptive pooling, linear."""

    def __init__(self, shape: list[int | None], dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(shape[0], 8, 9, stride=2, padding=4), nn.SiLU(),
            nn.Conv1d(8, 16, 9, stride=2, padding=4), nn.SiLU(),
            nn.AdaptiveAvgPool1d(8), nn.Flatten(), nn.Linear(16 * 8, dim), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TabularEncoder(nn.Module):
    """[B, F] -> [B, dim]: standardise, then a two-layer SiLU MLP."""

    def __init__(self, shape: list[int], dim: int) -> None:
        super().__init__()
        self.standardise = Standardise(shape[0])
        self.net = nn.Sequential(nn.Linear(shape[0], 2 * dim), nn.SiLU(),
                                 nn.Linear(2 * dim, dim), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.standardise(x))


def vector_encoder(m: Mapping[str, Any], dim: int) -> nn.Module:
    check_modality(m)
    kind, shape = m["kind"], list(m["shape"])
    if kind == "image":
        return ImageEncoder(shape, dim)
    if kind == "text":
        return TextEncoder(m["vocab_size"], dim, m.get("pad_id"))
    if kind == "timeseries":
        return TimeseriesEncoder(shape, dim)
    return TabularEncoder(shape, dim)


# -- tokenizers for the transformer ---------------------------------------------------------


class PatchTokenizer(nn.Module):
    """[B, C, H, W] -> [B, gh*gw, dim]: non-overlapping ``patch``x``patch`` patches (ViT)."""

    def __init__(self, shape: list[int], dim: int, patch: int) -> None:
        super().__init__()
        channels, height, width = shape
        if height % patch or width % patch:
            raise ValueError(f"image {height}x{width} is not divisible into {patch}x{patch} "
                             "patches; choose a patch size that divides both sides")
        self.grid = (height // patch, width // patch)
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(0.02 * torch.randn(self.grid[0] * self.grid[1], dim))

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos


class TokenTokenizer(nn.Module):
    """[B, T] ids -> [B, T, dim]: token embedding (``embed``) + learned positions."""

    def __init__(self, shape: list[int], vocab_size: int, dim: int, pad_id: int | None) -> None:
        super().__init__()
        if shape[0] is None:
            raise ValueError("the transformer needs a fixed text length (its token layout "
                             "is fixed); pad the ids to a fixed length")
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.pos = nn.Parameter(0.02 * torch.randn(shape[0], dim))
        self.n_tokens = shape[0]

    def forward(self, ids: Tensor) -> Tensor:
        return self.embed(ids) + self.pos


class ConvPatchTokenizer(nn.Module):
    """[B, C, L] -> [B, L/patch, dim]: 1-D conv patches of a time series + positions."""

    def __init__(self, shape: list[int | None], dim: int, patch: int) -> None:
        super().__init__()
        channels, length = shape
        if length is None or length % patch:
            raise ValueError(f"time series length {length} must be fixed and divisible by "
                             f"the patch size {patch}")
        self.n_tokens = length // patch
        self.proj = nn.Conv1d(channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(0.02 * torch.randn(self.n_tokens, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).transpose(1, 2) + self.pos


class FeatureTokenizer(nn.Module):
    """[B, F] -> [B, F, dim]: token f = standardised x_f * weight_f + bias_f."""

    def __init__(self, shape: list[int], dim: int) -> None:
        super().__init__()
        self.standardise = Standardise(shape[0])
        self.n_tokens = shape[0]
        self.weight = nn.Parameter(torch.randn(shape[0], dim) / math.sqrt(dim))
        self.bias = nn.Parameter(0.02 * torch.randn(shape[0], dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.standardise(x).unsqueeze(-1) * self.weight + self.bias


def tokenizer(m: Mapping[str, Any], dim: int, *, image_patch: int,
              timeseries_patch: int) -> nn.Module:
    check_modality(m)
    kind, shape = m["kind"], list(m["shape"])
    if kind == "image":
        return PatchTokenizer(shape, dim, image_patch)
    if kind == "text":
        return TokenTokenizer(shape, m["vocab_size"], dim, m.get("pad_id"))
    if kind == "timeseries":
        return ConvPatchTokenizer(shape, dim, timeseries_patch)
    return FeatureTokenizer(shape, dim)


def set_standardisation(module: nn.Module, name: str, data: Tensor) -> None:
    """Set ``module.encoders[name]``'s ``loc``/``scale`` from (training) data ``[N, F]``."""
    for sub in module.encoders[name].modules():
        if isinstance(sub, Standardise):
            sub.loc.copy_(data.mean(0))
            sub.scale.copy_(data.std(0).clamp_min(1e-6))
