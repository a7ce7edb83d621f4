"""Views of captured attention: rollout, head summaries, cross-modal share, query grids.

All functions take the maps ``capture_attention`` returns (a list of ``[B, H, N, N]``
self-attention tensors, any float dtype) and a ``token_layout`` (the spec's
``TokenSegment`` list saying which positions hold [CLS], image patches, text tokens, …), and
work on the whole batch with tensor algebra. ``attention_response`` assembles the JSON that
``POST /api/v1/explain/attention`` returns. Import them from ``estimators.attention``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from estimators.model import TokenSegment

Layout = Sequence[TokenSegment | Mapping[str, Any]]
CLS_ROLES = frozenset({"cls", "[cls]", "cls_token"})


def validate_token_layout(token_layout: Layout, n: int) -> list[TokenSegment]:
    """The layout's segments sorted by start, after checking they fit a sequence of ``n``.

    Raises ``ValueError`` (saying which segment and what to change) when a segment runs past
    position ``n - 1`` or two segments overlap. Positions no segment covers (a [SEP], say)
    are allowed: they belong to no modality.
    """
    segments = sorted((s if isinstance(s, TokenSegment) else TokenSegment.model_validate(s)
                       for s in token_layout), key=lambda s: s.start)
    if not segments:
        raise ValueError("token_layout is empty; list at least one segment, e.g. "
                         '{"modality": "image", "role": "patches", "start": 0, "length": 49}')
    for seg in segments:
        if seg.stop > n:
            raise ValueError(f"token_layout segment {seg.role!r} ({seg.modality}) covers "
                             f"positions {seg.start}..{seg.stop - 1}, but the attention maps "
                             f"have N={n} positions (0..{n - 1}); fix its start/length in the "
                             "model spec's token_layout")
    for prev, nxt in itertools.pairwise(segments):
        if nxt.start < prev.stop:
            raise ValueError(f"token_layout segments {prev.role!r} and {nxt.role!r} overlap "
                             f"at position {nxt.start}; each position belongs to one segment")
    return segments


def rollout(attentions: Sequence[Tensor], *, head_fusion: Literal["mean", "max", "min"] = "mean",
            residual: bool = True) -> Tensor:
    """Attention rollout (Abnar & Zuidema, ACL 2020): how much each input position flows
    into each output position through the whole self-attention stack.

    ``Â_l = normalise(½·fuse_heads(A_l) + ½·I)`` (the identity accounts for the residual
    connection, rows re-normalised to sum to 1), ``R = Â_L ⋯ Â_2 Â_1``. Input: ``[B, H, N, N]``
    per layer in forward order (or ``[B, N, N]``); output ``[B, N, N]`` in float32, rows sum
    to 1. Only self-attention layers of one sequence length compose this way.
    """
    if not attentions:
        raise ValueError("rollout needs at least one attention layer")
    fused = [_fuse_heads(a, head_fusion) for a in attentions]
    n = fused[0].shape[-1]
    for i, a in enumerate(fused):
        if a.shape[-2:] != (n, n):
            raise ValueError(f"rollout composes self-attention of one length N={n}; layer {i} "
                             f"has shape {list(a.shape)}; drop cross-attention layers first")
    eye = torch.eye(n, dtype=torch.float32, device=fused[0].device)
    result = eye.expand(fused[0].shape[0], n, n)
    for a in fused:
        if residual:
            a = 0.5 * a + 0.5 * eye
        a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        result = a @ result
    return result


def head_summary(attentions: Sequence[Tensor], token_layout: Layout, *,
                 query_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Per layer × head statistics of where attention goes between modalities.

    Each value is ``[B, L, H]``. With ``mass(q, S) = Σ_{k∈S} A[q, k]`` and means taken over
    query positions (those in ``query_mask`` ``[B, N]``, e.g. not padding):

    * ``"{a}->{b}"`` for modalities a ≠ b: mean over a's queries of ``mass(q, b)``
      (``text->image`` = how much text tokens look at the image);
    * ``to_{m}``: mean over queries of the other modalities of ``mass(q, m)``;
    * ``within``: mean over modality queries of mass on their own modality;
    * ``cross``: mean over modality queries of mass on any other modality;
    * ``to_cls``: mean over all queries of mass on [CLS] segments (role "cls"; 0 if none);
    * ``entropy``: mean over queries of ``-Σ_k A[q,k] log2 A[q,k]`` in bits (0 = one key,
      ``log2 N`` = uniform).

    A mean over an empty set of queries is NaN. Attention analysis of this kind follows
    VL-InterpreT (Aflalo et al., CVPR 2022).
    """
    a = _stack(attentions)                                   # [B, L, H, N, N]
    batch, n = a.shape[0], a.shape[-1]
    segments = validate_token_layout(token_layout, n)
    modalities = _modalities(segments)
    member = _membership(segments, modalities, n, a.device)   # [N, M] one-hot per modality
    cls = _cls_mask(segments, n, a.device)                    # [N]
    valid = (torch.ones(batch, n, dtype=torch.bool, device=a.device) if query_mask is None
             else query_mask.to(device=a.device, dtype=torch.bool).reshape(batch, n))

    mass = a @ member                                         # [B, L, H, Nq, M]
    out: dict[str, Tensor] = {}
    for i, src in enumerate(modalities):
        queries = member[:, i].bool() & valid                 # [B, N]
        for j, dst in enumerate(modalities):
            if i != j:
                out[f"{src}->{dst}"] = _query_mean(mass[..., j], queries)
    for j, dst in enumerate(modalities):
        others = member.sum(-1).bool() & ~member[:, j].bool() & valid
        out[f"to_{dst}"] = _query_mean(mass[..., j], others)
    in_modality = member.sum(-1).bool() & valid
    own = (mass * member).sum(-1)                             # [B, L, H, Nq]
    out["within"] = _query_mean(own, in_modality)
    out["cross"] = _query_mean(mass.sum(-1) - own, in_modality)
    out["to_cls"] = _query_mean((a * cls).sum(-1), valid)
    entropy = -(a * torch.log2(a.clamp_min(1e-30))).sum(-1)
    out["entropy"] = _query_mean(entropy, valid)
    return out


def cross_modal_share(attentions: Sequence[Tensor], token_layout: Layout, *,
                      query_mask: Tensor | None = None) -> Tensor:
    """Per layer, the share of modality tokens' attention that crosses to another modality.

    ``[B, L]``: ``head_summary(...)["cross"]`` averaged over heads. Rising share in later
    layers is the usual signature of a fusion stack (VL-InterpreT).
    """
    return head_summary(attentions, token_layout, query_mask=query_mask)["cross"].mean(-1)


def query_grid(attention: Tensor, token_layout: Layout, query: int, *,
               segment: str | None = None) -> Tensor:
    """One query position's attention over a gridded segment, reshaped to the grid.

    ``attention``: ``[..., N, N]`` (one layer, any leading axes such as batch and heads).
    ``segment`` picks the target by modality name or role; by default the first segment with
    a ``grid`` that does not contain the query (text token → image patches as an H×W map).
    Returns ``[..., h, w]``.
    """
    n = attention.shape[-1]
    segments = validate_token_layout(token_layout, n)
    if not -attention.shape[-2] <= query < attention.shape[-2]:
        raise ValueError(f"query={query} is not a position of the {attention.shape[-2]} "
                         "queries; choose a position from the token layout")
    target = _grid_segment(segments, query % attention.shape[-2], segment)
    h, w = target.grid  # type: ignore[misc]
    return attention[..., query, target.start:target.stop].reshape(*attention.shape[:-2], h, w)


def position_labels(token_layout: Layout | None, n: int,
                    tokens: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """A short label for each of the ``n`` sequence positions, for axes and tooltips.

    [CLS] segments → ``[CLS]``; gridded segments → ``image (row,col)``; token segments take
    their strings from ``tokens[modality]`` (e.g. the decoded text) when given; anything else
    is ``modality i`` or ``#position``.
    """
    labels = [f"#{p}" for p in range(n)]
    for seg in validate_token_layout(token_layout, n) if token_layout else []:
        strings = (tokens or {}).get(seg.modality or "", ())
        for i in range(seg.length):
            if seg.role.lower() in CLS_ROLES:
                label = "[CLS]"
            elif seg.grid is not None:
                label = f"{seg.modality or seg.role} ({i // seg.grid[1]},{i % seg.grid[1]})"
            elif i < len(strings):
                label = str(strings[i])
            else:
                label = f"{seg.modality or seg.role} {i}"
            labels[seg.start + i] = label
    return labels


def explain_attention(attentions: Sequence[Tensor], token_layout: Layout | None, *,
                      layer: int | None = None, head: int | None = None,
                      query: int | None = None, segment: str | None = None,
                      index: int = 0, query_mask: Tensor | None = None) -> dict[str, Any]:
    """Everything the attention view of one instance needs, as tensors.

    Uses the self-attention layers over the joint sequence: those with ``Nq == Nk == N``,
    where N is the key length of the last captured layer (unimodal encoders that run before
    the fusion stack have other lengths and are left out). ``index`` picks the instance of
    the batch; ``layer`` indexes the joint layers (default the last), ``head`` a head
    (default the mean over heads), ``query`` a position (default the first [CLS], if any).

    Returns ``{"layers": [captured index of each joint layer], "n_layers", "n_heads", "n",
    "layer", "head", "query", "segments": [dict], "map": [N, N], "rollout": [N, N],
    "summary": {name: [L, H]} (empty without a layout), "cross_modal_share": [L] | None,
    "query_grid": [h, w] | None, "grid_segment": dict | None}``.
    """
    if not attentions:
        raise ValueError("no attention layers were captured")
    n = attentions[-1].shape[-1]
    joint = [i for i, a in enumerate(attentions) if a.shape[-2:] == (n, n)]
    maps = [attentions[i][index:index + 1].float() for i in joint]
    n_heads = maps[-1].shape[1]
    layer = len(maps) - 1 if layer is None else layer
    if not -len(maps) <= layer < len(maps):
        raise ValueError(f"layer={layer}: the model has {len(maps)} attention layers over "
                         f"the joint sequence; choose 0..{len(maps) - 1}")
    chosen = maps[layer][0]
    if head is not None and not -chosen.shape[0] <= head < chosen.shape[0]:
        raise ValueError(f"head={head}: layer {layer} has {chosen.shape[0]} heads; choose "
                         f"0..{chosen.shape[0] - 1}, or no head for the mean over heads")
    attention_map = chosen.mean(0) if head is None else chosen[head]
    segments = validate_token_layout(token_layout, n) if token_layout else []
    if query is None:
        query = next((s.start for s in segments if s.role.lower() in CLS_ROLES), None)
    elif not -n <= query < n:
        raise ValueError(f"query={query}: the sequence has {n} positions; choose 0..{n - 1}")
    else:
        query %= n
    grid, grid_segment = None, None
    if query is not None and any(s.grid for s in segments):
        target = _grid_segment(segments, query, segment)
        grid = query_grid(attention_map, segments, query, segment=target.modality or target.role)
        grid_segment = target.model_dump()
    summary: dict[str, Tensor] = {}
    share = None
    if segments:
        mask = None if query_mask is None else query_mask[index:index + 1]
        summary = {k: v[0] for k, v in head_summary(maps, segments, query_mask=mask).items()}
        share = summary["cross"].mean(-1)
    return {"layers": joint, "n_layers": len(maps), "n_heads": n_heads, "n": n,
            "layer": layer % len(maps), "head": head, "query": query,
            "segments": [s.model_dump() for s in segments], "map": attention_map,
            "rollout": rollout(maps)[0], "summary": summary, "cross_modal_share": share,
            "query_grid": grid, "grid_segment": grid_segment}


NO_ATTENTION_NOTE = (
    "No attention was captured: the model uses neither torch.nn.MultiheadAttention nor "
    "scaled_dot_product_attention and returned no `attentions`. HuggingFace models: load them "
    "with attn_implementation='eager' (or keep 'sdpa', which is captured) and "
    "output_attentions=True.")


def padding_positions(token_layout: Layout | None, n: int,
                      token_ids: Mapping[str, Tensor], pad_ids: Mapping[str, int | None],
                      *, attentions: Sequence[Tensor] | None = None,
                      tol: float = 1e-4) -> Tensor:
    """``[N]`` bool: sequence positions holding a token modality's [PAD] in this instance.

    A token segment maps position ``start + i`` to token ``i`` of its modality when the
    segment is as long as the modality's ids (``token_ids[name]``, shape ``[T]``); padding is
    where that id equals ``pad_ids[name]``. Everything else is kept.

    With ``attentions`` (this instance's ``[1, H, N, N]`` maps), padding counts only where the
    model masks it out: if any query of any ``N × N`` layer puts more than ``tol`` on a
    padding key, nothing is returned as padding, because attention paid to padding (an
    attention sink, say) is part of what the model does and must stay visible.
    """
    hidden = torch.zeros(n, dtype=torch.bool)
    for seg in validate_token_layout(token_layout, n) if token_layout else []:
        ids, pad = token_ids.get(seg.modality or ""), pad_ids.get(seg.modality or "")
        if ids is None or pad is None or ids.numel() != seg.length:
            continue
        hidden[seg.start:seg.stop] = ids.reshape(-1).cpu() == pad
    if attentions is not None and hidden.any():
        joint = [a for a in attentions if a.shape[-2:] == (n, n)]
        paid = max((float(a[..., hidden.to(a.device)].float().max()) for a in joint),
                   default=0.0)
        if paid > tol:
            hidden[:] = False
    return hidden


def _shown_segments(segments: Sequence[Mapping[str, Any]], shown: Tensor
                    ) -> list[dict[str, Any]]:
    """Segments re-indexed to the shown positions (those with none left are dropped)."""
    before = torch.cumsum(shown.long(), 0) - shown.long()   # shown positions before p
    out = []
    for seg in segments:
        count = int(shown[seg["start"]:seg["start"] + seg["length"]].sum())
        if count:
            out.append({**seg, "start": int(before[seg["start"]]), "length": count})
    return out


def attention_response(attentions: Sequence[Tensor], token_layout: Layout | None, *,
                       layer: int | None = None, head: int | None = None,
                       query: int | None = None, segment: str | None = None,
                       tokens: Mapping[str, Sequence[str]] | None = None,
                       query_mask: Tensor | None = None,
                       hide: Tensor | None = None) -> dict[str, Any]:
    """The JSON body of ``POST /api/v1/explain/attention`` for one instance (batch of 1).

    ``{available, note, n_layers, n_heads, labels, segments, summary: [[{to_<m>, <a>-><b>,
    within, cross, to_cls, entropy}]] (layer × head), cross_modal_share: [float] (per layer),
    map: [[float]] (N×N, chosen layer, chosen head or mean over heads), rollout: [[float]],
    query_grid: [[float]] | null, layer, head, query, grid_segment}``. NaN (a mean over no
    queries) becomes null. ``tokens`` gives display strings per token modality for labels.

    ``hide`` (``[N]`` bool, e.g. ``padding_positions``) leaves those positions out of the
    payload: maps, rollout, labels and segments cover the shown positions only, ``query``
    (in and out) counts shown positions, and hidden positions are not averaged over as
    queries in the head summaries. Maps and rollout are computed on the full sequence and
    then cut, so a row's weights on hidden keys (attention a model paid to its padding)
    are simply not drawn.
    """
    if not attentions:
        return {"available": False, "note": NO_ATTENTION_NOTE, "n_layers": 0, "n_heads": 0,
                "labels": [], "segments": [], "summary": [], "cross_modal_share": [],
                "map": None, "rollout": [], "query_grid": None, "layer": None, "head": None,
                "query": None, "grid_segment": None}
    n = attentions[-1].shape[-1]
    shown = torch.ones(n, dtype=torch.bool) if hide is None else ~hide.reshape(-1).bool().cpu()
    if shown.numel() != n or not shown.any():
        raise ValueError(f"hide must be a [N={n}] mask that leaves some position shown")
    positions = shown.nonzero().flatten()
    if query is not None:
        if not -len(positions) <= query < len(positions):
            raise ValueError(f"query={query}: the sequence shows {len(positions)} positions; "
                             f"choose 0..{len(positions) - 1}")
        query = int(positions[query])
    if hide is not None:
        keep = shown.reshape(1, n)
        query_mask = keep if query_mask is None else query_mask.bool() & keep
    view = explain_attention(attentions, token_layout, layer=layer, head=head, query=query,
                             segment=segment, query_mask=query_mask)
    summary = view["summary"]
    rows = [[{key: _json_float(value[li, hi]) for key, value in summary.items()}
             for hi in range(next(iter(summary.values())).shape[1])]
            for li in range(view["n_layers"])] if summary else []
    notes = []
    if len(view["layers"]) < len(attentions):
        notes.append(f"{len(attentions) - len(view['layers'])} attention layer(s) over other "
                     "sequence lengths (unimodal encoders, cross-attention) are not shown")
    if not token_layout:
        notes.append("the model spec has no token_layout, so per-modality summaries are "
                     "unavailable; add one to the spec to see them")
    if not bool(shown.all()):
        notes.append(f"{int((~shown).sum())} padding position(s) are not shown")
    cut = positions.to(view["map"].device)
    labels = position_labels(token_layout, view["n"], tokens)
    shown_query = (None if view["query"] is None or not bool(shown[view["query"]])
                   else int(shown[:view["query"]].sum()))
    grid_segment = view["grid_segment"]
    if grid_segment is not None:
        grid_segment = _shown_segments([grid_segment], shown)[0]
    return {"available": True, "note": "; ".join(notes) or None,
            "n_layers": view["n_layers"], "n_heads": view["n_heads"],
            "labels": [labels[p] for p in positions.tolist()],
            "segments": _shown_segments(view["segments"], shown), "summary": rows,
            "cross_modal_share": _json_list(view["cross_modal_share"]),
            "map": _json_list(view["map"][cut][:, cut]),
            "rollout": _json_list(view["rollout"][cut][:, cut]),
            "query_grid": _json_list(view["query_grid"]), "layer": view["layer"],
            "head": view["head"], "query": shown_query, "grid_segment": grid_segment}


# -- helpers ------------------------------------------------------------------------------


def _fuse_heads(a: Tensor, how: str) -> Tensor:
    a = a.float()
    if a.ndim == 3:
        return a
    if how == "mean":
        return a.mean(1)
    if how == "max":
        return a.amax(1)
    if how == "min":
        return a.amin(1)
    raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', not {how!r}")


def _stack(attentions: Sequence[Tensor]) -> Tensor:
    if not attentions:
        raise ValueError("no attention layers given")
    shapes = {tuple(a.shape) for a in attentions}
    if len(shapes) != 1 or attentions[0].ndim != 4:
        raise ValueError(f"head summaries need self-attention maps of one shape [B, H, N, N] "
                         f"in every layer, got {sorted(shapes)}; pass only the joint layers")
    return torch.stack([a.float() for a in attentions], dim=1)


def _modalities(segments: Sequence[TokenSegment]) -> list[str]:
    names: list[str] = []
    for seg in segments:
        if seg.modality is not None and seg.modality not in names:
            names.append(seg.modality)
    return names


def _membership(segments: Sequence[TokenSegment], modalities: list[str], n: int,
                device: torch.device) -> Tensor:
    member = torch.zeros(n, len(modalities), device=device)
    for seg in segments:
        if seg.modality is not None:
            member[seg.start:seg.stop, modalities.index(seg.modality)] = 1.0
    return member


def _cls_mask(segments: Sequence[TokenSegment], n: int, device: torch.device) -> Tensor:
    mask = torch.zeros(n, device=device)
    for seg in segments:
        if seg.role.lower() in CLS_ROLES:
            mask[seg.start:seg.stop] = 1.0
    return mask


def _query_mean(values: Tensor, queries: Tensor) -> Tensor:
    """Mean of ``values`` ``[B, L, H, N]`` over the query positions ``queries`` ``[B, N]``."""
    w = queries.to(values.dtype)[:, None, None, :]
    return (values * w).sum(-1) / w.sum(-1)


def _grid_segment(segments: Sequence[TokenSegment], query: int,
                  segment: str | None) -> TokenSegment:
    gridded = [s for s in segments if s.grid is not None]
    if segment is not None:
        match = [s for s in gridded if segment in (s.modality, s.role)]
        if not match:
            raise ValueError(f"segment={segment!r} names no segment with a grid; gridded "
                             f"segments: {[s.role for s in gridded]}")
        return match[0]
    outside = [s for s in gridded if not s.start <= query < s.stop]
    if not (outside or gridded):
        raise ValueError("no token_layout segment has a grid; give the image patches' "
                         "segment a grid [rows, cols] in the model spec")
    return (outside or gridded)[0]


def _json_float(x: Tensor) -> float | None:
    value = float(x)
    return None if math.isnan(value) else value


def _json_list(x: Tensor | None) -> Any:
    """Nested lists of floats, NaN as None (JSON has no NaN)."""
    if x is None:
        return None

    def clean(v: Any) -> Any:
        if isinstance(v, list):
            return [clean(e) for e in v]
        return None if math.isnan(v) else v

    return clean(x.float().tolist())
