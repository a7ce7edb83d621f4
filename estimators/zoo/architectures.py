"""The zoo's fusion architectures, registered by name in ``estimators.zoo.registry``.

| name               | fusion f(x_1..x_M)                                  | interactions   |
|--------------------|-----------------------------------------------------|----------------|
| ``late_fusion``    | Σ_m head_m(enc_m(x_m)) (summed per-modality logits) | none (additive)|
| ``early_fusion``   | MLP([enc_1(x_1); …; enc_M(x_M)])                     | any, via MLP   |
| ``tensor_fusion``  | head(Σ_r ∏_m W_m^r [enc_m(x_m); 1])                  | multiplicative |
| ``transformer``    | joint self-attention over [CLS] + all modality tokens| any, via attn  |
| ``pretrained_text_fusion`` | MLP([proj(frozen BERT(text)); enc(x_2); …])  | any, via MLP   |

``tensor_fusion`` is the low-rank form (Liu et al. 2018, "Efficient Low-rank Multimodal
Fusion") of the outer-product Tensor Fusion Network (Zadeh et al. 2017): appending a 1 to
each encoding keeps every unimodal and lower-order term of the full outer product.
``late_fusion`` has an exactly zero cross-modal Hessian, the reference for "no interaction".
``pretrained_text_fusion`` is early fusion whose text encoders are a frozen pretrained
backbone from an installed package (``estimators.zoo.pretrained``; params ``text_backbone``
and optionally ``backbone_token_ids`` ``{modality: [backbone id of each local token]}``):
only the projection, the other encoders and the head are trained and shipped.

Every architecture has the same two-stage shape, which lets estimators cache per-modality
work (EMAP evaluates f on all pairs (x_1^i, x_2^j) from N encodings per modality):

- ``module.encoders``: ``nn.ModuleDict`` keyed by modality name; ``encoders[name](x)`` is a
  function of that modality only (``[B, dim]`` vectors, or ``[B, n_tokens, dim]`` tokens for
  the transformer);
- ``module.fuse(encodings: dict[str, Tensor]) -> logits [B, C]``;
- ``module(**inputs) == module.fuse({n: module.encoders[n](inputs[n]) for n in names})``.

Token modalities keep their ``nn.Embedding`` at ``encoders.<name>.embed`` (the spec's
``embedding`` path, see ``embedding_path``). The transformer uses ``nn.MultiheadAttention``
(so attention capture sees it) and its joint sequence is [CLS], then each modality's tokens
in ``params["modalities"]`` order (``token_layout``). Params shared by all architectures:
``modalities`` (``modality_params(spec)``), ``n_classes``, ``dim``, ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from estimators.model import ModelSpec, TokenSegment
from estimators.zoo import pretrained
from estimators.zoo.encoders import tokenizer, vector_encoder
from estimators.zoo.registry import register

ARCHITECTURES = ("late_fusion", "early_fusion", "tensor_fusion", "transformer")
"""The architectures trained on every scenario; ``pretrained_text_fusion`` needs a backbone."""


def embedding_path(name: str) -> str:
    """The spec's ``embedding`` submodule path of token modality ``name`` in any zoo model."""
    return f"encoders.{name}.embed"


def modality_params(spec: ModelSpec) -> list[dict[str, Any]]:
    """The ``params["modalities"]`` entries describing ``spec``'s modalities to the zoo."""
    out = []
    for m in spec.modalities:
        entry: dict[str, Any] = {"name": m.name, "kind": m.kind, "shape": list(m.shape)}
        if m.is_token:
            if not m.vocab:
                raise ValueError(f"text modality {m.name!r} needs a vocab in its spec")
            entry.update(vocab_size=len(m.vocab), pad_id=m.pad_id)
        out.append(entry)
    return out


class TwoStageFusion(nn.Module):
    """Base: ``encoders`` per modality, then ``fuse``; forward composes the two."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        modalities = params["modalities"]
        if not modalities:
            raise ValueError("params['modalities'] must list at least one modality")
        self.names = [m["name"] for m in modalities]
        self.n_classes = int(params["n_classes"])
        self.dim = int(params.get("dim", 32))

    def fuse(self, encodings: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, **inputs: Tensor) -> Tensor:
        missing = [n for n in self.names if n not in inputs]
        if missing:
            raise TypeError(f"missing inputs {missing}; expected {self.names}")
        return self.fuse({n: self.encoders[n](inputs[n]) for n in self.names})


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, d_out))


class LateFusion(TwoStageFusion):
    """logits = Σ_m head_m(enc_m(x_m)): additive, so ∂²f/∂x_a∂x_b = 0 for a ≠ b."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        hidden = int(params.get("hidden", 2 * self.dim))
        self.encoders = nn.ModuleDict({m["name"]: vector_encoder(m, self.dim)
                                       for m in params["modalities"]})
        self.heads = nn.ModuleDict({n: _mlp(self.dim, hidden, self.n_classes)
                                    for n in self.names})

    def fuse(self, encodings: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([self.heads[n](encodings[n]) for n in self.names]).sum(0)


class EarlyFusion(TwoStageFusion):
    """logits = MLP(concat of the modality encodings)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        hidden = int(params.get("hidden", 2 * self.dim))
        self.encoders = nn.ModuleDict({m["name"]: self.encoder(m, params)
                                       for m in params["modalities"]})
        self.head = _mlp(len(self.names) * self.dim, hidden, self.n_classes)

    def encoder(self, m: Mapping[str, Any], params: Mapping[str, Any]) -> nn.Module:
        """The encoder of modality entry ``m`` (``[B, dim]`` out)."""
        return vector_encoder(m, self.dim)

    def fuse(self, encodings: Mapping[str, Tensor]) -> Tensor:
        return self.head(torch.cat([encodings[n] for n in self.names], dim=-1))


class PretrainedTextFusion(EarlyFusion):
    """Early fusion whose text modalities are read by a frozen pretrained backbone:
    logits = MLP([proj(normalise(meanpool(BERT(text)))); enc(x_2); …])."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        backbone = params.get("text_backbone")
        if not isinstance(backbone, str):
            raise ValueError("params need 'text_backbone', one of "
                             f"{sorted(pretrained.BACKBONES)}")
        token_ids = params.get("backbone_token_ids") or {}
        if not isinstance(token_ids, Mapping):
            raise ValueError("backbone_token_ids must map text modality names to id lists")
        texts = [m["name"] for m in params["modalities"] if m.get("kind") == "text"]
        if not texts:
            raise ValueError("pretrained_text_fusion needs at least one text modality")
        unknown = sorted(set(token_ids) - set(texts))
        if unknown:
            raise ValueError(f"backbone_token_ids names {unknown}, which are not text "
                             f"modalities ({texts})")
        super().__init__(params)

    def encoder(self, m: Mapping[str, Any], params: Mapping[str, Any]) -> nn.Module:
        if m["kind"] != "text":
            return vector_encoder(m, self.dim)
        token_ids = (params.get("backbone_token_ids") or {}).get(m["name"])
        return pretrained.PretrainedTextEncoder(m, self.dim, params["text_backbone"], token_ids)


class TensorFusion(TwoStageFusion):
    """Low-rank tensor fusion: h = Σ_r ∏_m ([z_m; 1] @ factors_m[r]), logits = head(h).

    Equivalent to a rank-R weight on the outer product ⊗_m [z_m; 1] (Liu et al. 2018).
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        rank, hidden = int(params.get("rank", 4)), int(params.get("hidden", 2 * self.dim))
        self.encoders = nn.ModuleDict({m["name"]: vector_encoder(m, self.dim)
                                       for m in params["modalities"]})
        scale = 1.0 / math.sqrt(self.dim + 1)
        self.factors = nn.ParameterDict({
            n: nn.Parameter(scale * torch.randn(rank, self.dim + 1, hidden)) for n in self.names})
        self.head = nn.Sequential(nn.Tanh(), nn.Linear(hidden, self.n_classes))

    def fuse(self, encodings: Mapping[str, Tensor]) -> Tensor:
        product = None
        for n in self.names:
            z = encodings[n]
            z1 = torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)
            proj = torch.einsum("bd,rdh->brh", z1, self.factors[n])
            product = proj if product is None else product * proj
        return self.head(product.sum(1))


class Block(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=True, average_attn_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MultimodalTransformer(TwoStageFusion):
    """[CLS] + per-modality tokens (+ modality-type embeddings) -> joint self-attention
    blocks -> linear head on the ``readout``: [CLS] (default, ``"cls"``) or the mean of one
    modality's output tokens (a modality name), which makes that modality's tokens gather
    what the answer needs from the others (e.g. question words attending to image patches).
    Params: ``layers``, ``heads``, ``mlp``, ``image_patch``, ``timeseries_patch``,
    ``readout``."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        heads, layers = int(params.get("heads", 4)), int(params.get("layers", 2))
        mlp = int(params.get("mlp", 2 * self.dim))
        if self.dim % heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {heads}")
        self.encoders = nn.ModuleDict({
            m["name"]: tokenizer(m, self.dim, image_patch=int(params.get("image_patch", 2)),
                                 timeseries_patch=int(params.get("timeseries_patch", 10)))
            for m in params["modalities"]})
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, self.dim))
        self.modality_embed = nn.Parameter(0.02 * torch.randn(len(self.names), self.dim))
        self.blocks = nn.ModuleList(Block(self.dim, heads, mlp) for _ in range(layers))
        self.norm = nn.LayerNorm(self.dim)
        self.head = nn.Linear(self.dim, self.n_classes)
        self.readout = str(params.get("readout", "cls"))
        if self.readout != "cls" and self.readout not in self.names:
            raise ValueError(f"readout must be 'cls' or one of {self.names}, "
                             f"not {self.readout!r}")

    def fuse(self, encodings: Mapping[str, Tensor]) -> Tensor:
        first = encodings[self.names[0]]
        parts = [self.cls.expand(first.shape[0], -1, -1)]
        parts += [encodings[n] + self.modality_embed[i] for i, n in enumerate(self.names)]
        x = torch.cat(parts, dim=1)
        for block in self.blocks:
            x = block(x)
        if self.readout == "cls":
            return self.head(self.norm(x[:, 0]))
        start = 1
        for part, name in zip(parts[1:], self.names, strict=True):
            if name == self.readout:
                break
            start += part.shape[1]
        pooled = x[:, start:start + encodings[self.readout].shape[1]].mean(1)
        return self.head(self.norm(pooled))


def token_layout(params: Mapping[str, Any]) -> list[TokenSegment]:
    """The transformer's joint sequence: [CLS] at 0, then each modality's tokens in order."""
    segments = [TokenSegment(modality=None, role="cls", start=0, length=1)]
    start = 1
    image_patch = int(params.get("image_patch", 2))
    ts_patch = int(params.get("timeseries_patch", 10))
    for m in params["modalities"]:
        shape, grid = list(m["shape"]), None
        if m["kind"] == "image":
            grid = (shape[1] // image_patch, shape[2] // image_patch)
            length, role = grid[0] * grid[1], "patches"
        elif m["kind"] == "text":
            length, role = shape[0], "tokens"
        elif m["kind"] == "timeseries":
            length, role = shape[1] // ts_patch, "patches"
        else:
            length, role = shape[0], "features"
        segments.append(TokenSegment(modality=m["name"], role=role, start=start,
                                     length=length, grid=grid))
        start += length
    return segments


def _seeded(cls: type[TwoStageFusion]) -> Callable[[dict[str, Any]], nn.Module]:
    """Factory that initialises ``cls`` from ``params["seed"]`` without touching global RNG."""

    def make(params: dict[str, Any]) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(params.get("seed", 0)))
            return cls(params)

    make.__doc__ = cls.__doc__
    return make


register("late_fusion")(_seeded(LateFusion))
register("early_fusion")(_seeded(EarlyFusion))
register("tensor_fusion")(_seeded(TensorFusion))
register("transformer")(_seeded(MultimodalTransformer))
register("pretrained_text_fusion",
         external_sources=lambda params: [pretrained.identity(str(params["text_backbone"]))],
         )(_seeded(PretrainedTextFusion))
