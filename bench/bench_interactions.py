"""Speed of the estimators core against the obvious baselines (issue 3, "Done when").

Run: ``.venv/bin/python bench/bench_interactions.py [--repeat 5] [--emap-n 512]``.
One thread, float32; every timing is the minimum over ``--repeat`` runs (half as many for
the baselines that take seconds, one for ``functional.hessian``), baseline and ours in the
same process, and every comparison also prints the max |difference|.

1. cross-Hessian block (image 1×16×16 = 256 dims × text 12×32 = 384 dims, batch 8):
   ours (vmapped forward-over-reverse on the smaller side) vs the naive loop (per instance,
   one ``autograd.grad`` per image dimension), vs the same loop batched over instances, vs
   ``torch.autograd.functional.hessian`` on the concatenated input (per instance).
2. element heatmap by HVPs (one per token) vs the full block.
3. Integrated Hessians completeness error at the default n_steps.
4. EMAP over N instances vs the raw batched forward of the same N² pairs, and with the
   encoder cache.
5. Integrated Gradients through ``attribute`` vs Captum called directly.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn

from estimators.attribution import attribute
from estimators.emap import Encoders, emap_logits
from estimators.interactions import (
    block_to_elements,
    cross_hessian,
    integrated_hessians,
    interaction_heatmap,
)
from estimators.model import ModalitySpec, ModelSpec, MultimodalModel

VOCAB = 100


class TextEncoder(nn.Module):
    def __init__(self, dim: int, emb_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, emb_dim, padding_idx=0)
        self.proj = nn.Sequential(nn.Linear(emb_dim, dim), nn.GELU())

    def pool(self, emb: Tensor, ids: Tensor) -> Tensor:
        mask = (ids != 0).unsqueeze(-1).to(emb.dtype)
        return self.proj((emb * mask).sum(-2) / mask.sum(-2).clamp_min(1.0))

    def forward(self, ids: Tensor) -> Tensor:
        return self.pool(self.embed(ids), ids)


class CnnTextFusion(nn.Module):
    """CNN(image) + embedding(text) encoders, non-additive fusion head, smooth throughout."""

    def __init__(self, dim: int = 32, emb_dim: int = 32, n_classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoders = nn.ModuleDict({
            "image": nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),
                                   nn.Flatten(), nn.Linear(8 * 8 * 8, dim), nn.Tanh()),
            "text": TextEncoder(dim, emb_dim)})
        self.head = nn.Sequential(nn.Linear(3 * dim, 64), nn.SiLU(), nn.Linear(64, n_classes))

    def fuse(self, enc: dict[str, Tensor]) -> Tensor:
        zi, zt = enc["image"], enc["text"]
        return self.head(torch.cat([zi, zt, zi * zt], dim=-1))

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        return self.fuse({"image": self.encoders["image"](image),
                          "text": self.encoders["text"](text)})

    def from_features(self, image: Tensor, emb: Tensor, ids: Tensor) -> Tensor:
        """The same function written by hand from the embedding output (no hooks)."""
        return self.fuse({"image": self.encoders["image"](image),
                          "text": self.encoders["text"].pool(emb, ids)})


def bench_model() -> MultimodalModel:
    spec = ModelSpec(modalities=[
        ModalitySpec(name="image", kind="image", shape=(1, 16, 16)),
        ModalitySpec(name="text", kind="text", shape=(12,), dtype="int64",
                     embedding="encoders.text.embed", pad_id=0, mask_id=1)],
        classes=["a", "b", "c"])
    return MultimodalModel(CnnTextFusion(), spec)


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def inputs_for(model: MultimodalModel, n: int, seed: int = 0) -> dict[str, Tensor]:
    inputs = model.spec.example_inputs(n, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    inputs["text"] = torch.randint(2, VOCAB, inputs["text"].shape, generator=gen)
    return inputs


def _image_text_grads(model: MultimodalModel, inputs: dict[str, Tensor], target: int
                      ) -> tuple[Tensor, Tensor, Tensor]:
    feats = model.embed(inputs)
    image = feats["image"].clone().requires_grad_()
    emb = feats["text"].clone().requires_grad_()
    out = model.module.from_features(image, emb, inputs["text"])[:, target].sum()
    return torch.autograd.grad(out, image, create_graph=True)[0].flatten(1), image, emb


def naive_loop(model: MultimodalModel, inputs: dict[str, Tensor], target: int) -> Tensor:
    """What one writes first: per instance, one ``autograd.grad`` per image dimension."""
    blocks = []
    for b in range(inputs["image"].shape[0]):
        row = {k: v[b:b + 1] for k, v in inputs.items()}
        g_image, image, emb = _image_text_grads(model, row, target)
        cols = [torch.autograd.grad(g_image[0, i], emb, retain_graph=True)[0][0]
                for i in range(g_image.shape[1])]
        blocks.append(torch.stack(cols).reshape(*image.shape[1:], *emb.shape[1:]))
    return torch.stack(blocks)


def batched_grad_loop(model: MultimodalModel, inputs: dict[str, Tensor], target: int) -> Tensor:
    """A stronger baseline: one ``autograd.grad`` per image dimension for the whole batch
    (rows summed, valid because rows are independent in eval mode)."""
    g_image, image, emb = _image_text_grads(model, inputs, target)
    rows = [torch.autograd.grad(g_image[:, i].sum(), emb, retain_graph=True)[0]
            for i in range(g_image.shape[1])]
    return torch.stack(rows, 1).reshape(image.shape[0], *image.shape[1:], *emb.shape[1:])


def functional_hessian(model: MultimodalModel, inputs: dict[str, Tensor], target: int) -> Tensor:
    """``torch.autograd.functional.hessian`` on the concatenated feature vector, per row."""
    feats = model.embed(inputs)
    n_img = feats["image"][0].numel()
    blocks = []
    for i in range(feats["image"].shape[0]):
        ids = inputs["text"][i:i + 1]

        def f(flat: Tensor, ids: Tensor = ids) -> Tensor:
            image = flat[:n_img].reshape(1, *feats["image"].shape[1:])
            emb = flat[n_img:].reshape(1, *feats["text"].shape[1:])
            return model.module.from_features(image, emb, ids)[0, target]

        flat = torch.cat([feats["image"][i].flatten(), feats["text"][i].flatten()])
        hess = torch.autograd.functional.hessian(f, flat)
        blocks.append(hess[:n_img, n_img:].reshape(*feats["image"].shape[1:],
                                                   *feats["text"].shape[1:]))
    return torch.stack(blocks)


def raw_pairs_forward(model: MultimodalModel, inputs: dict[str, Tensor],
                      batch_size: int) -> Tensor:
    """Baseline for EMAP: the batched forward of all N² pairs, logits summed (not kept)."""
    n = inputs["image"].shape[0]
    acc = torch.zeros(model.spec.n_classes, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, n * n, batch_size):
            pair = torch.arange(start, min(start + batch_size, n * n))
            i, j = pair // n, pair % n
            acc += model({"image": inputs["image"][i], "text": inputs["text"][j]},
                         check=False).double().sum(0)
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--emap-n", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = bench_model()
    inputs = inputs_for(model, 8)
    rows: list[tuple[str, str, str, str]] = []

    t_ours, block = best_of(lambda: cross_hessian(model, inputs, "image", "text", target=1),
                            args.repeat)
    slow = max(2, args.repeat // 2)  # repeats for the baselines that take seconds
    t_loop, ref_loop = best_of(lambda: naive_loop(model, inputs, 1), slow)
    t_batched, ref_batched = best_of(lambda: batched_grad_loop(model, inputs, 1), args.repeat)
    t_func, ref_func = best_of(lambda: functional_hessian(model, inputs, 1), 1)
    rows.append(("cross_hessian vs naive grad loop", f"{t_ours:.3f}s / {t_loop:.3f}s",
                 f"{t_loop / t_ours:.1f}x faster", f"{(block - ref_loop).abs().max():.1e}"))
    rows.append(("cross_hessian vs batched grad loop", f"{t_ours:.3f}s / {t_batched:.3f}s",
                 f"{t_batched / t_ours:.1f}x faster",
                 f"{(block - ref_batched).abs().max():.1e}"))
    rows.append(("cross_hessian vs functional.hessian", f"{t_ours:.3f}s / {t_func:.3f}s",
                 f"{t_func / t_ours:.1f}x faster", f"{(block - ref_func).abs().max():.1e}"))

    t_hvp, hm = best_of(lambda: interaction_heatmap(model, inputs, "image", "text", target=1,
                                                    weight="ones"), args.repeat)
    reduced = block_to_elements(block, hm.layout_a, hm.layout_b)
    rows.append(("heatmap by HVPs vs full block", f"{t_hvp:.3f}s / {t_ours:.3f}s",
                 f"{t_hvp / t_ours:.2f}x the time", f"{(hm.matrix - reduced).abs().max():.1e}"))

    t_ih, ih = best_of(lambda: integrated_hessians(model, inputs, "image", "text", target=1,
                                                   baselines="pad"), 1)
    rows.append(("integrated_hessians (n_steps=16)", f"{t_ih:.3f}s", "completeness |err|",
                 f"{ih.delta.abs().max():.1e}"))

    data = inputs_for(model, args.emap_n, seed=1)
    bs = 4096
    t_raw, _ = best_of(lambda: raw_pairs_forward(model, data, bs), slow)
    t_emap, emap_full = best_of(lambda: emap_logits(model, data, batch_size=bs), slow)
    encoders = Encoders.of(model)
    t_cache, emap_cached = best_of(lambda: emap_logits(model, data, batch_size=bs,
                                                       encoders=encoders), args.repeat)
    n2 = args.emap_n**2
    rows.append((f"EMAP N={args.emap_n} vs raw N² forward",
                 f"{t_emap:.2f}s / {t_raw:.2f}s",
                 f"{t_raw / t_emap:.2f}x throughput ({n2 / t_emap:,.0f} pairs/s)", "-"))
    rows.append(("EMAP with encoder cache vs raw N² forward",
                 f"{t_cache:.3f}s / {t_raw:.2f}s", f"{t_raw / t_cache:.1f}x faster",
                 f"{(emap_full - emap_cached).abs().max():.1e}"))

    def ours_ig() -> Tensor:
        return attribute(model, inputs, target=1, n_steps=50).attributions["text"]

    def captum_ig() -> Tensor:
        feats = model.embed(inputs)
        ig = IntegratedGradients(model.module.from_features)
        return ig.attribute((feats["image"], feats["text"]), target=1, n_steps=50,
                            additional_forward_args=(inputs["text"],))[1]

    t_captum, ref_ig = best_of(captum_ig, args.repeat + 2)
    t_wrap, our_ig = best_of(ours_ig, args.repeat + 2)
    rows.append(("attribute(IG) vs Captum directly", f"{t_wrap:.3f}s / {t_captum:.3f}s",
                 f"{100 * (t_wrap / t_captum - 1):+.1f}% overhead",
                 f"{(our_ig - ref_ig).abs().max():.1e}"))

    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    header = ("measurement", "time (ours / baseline)", "ratio", "max |diff|")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for line in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
