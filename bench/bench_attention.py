"""Attention capture overhead vs a plain forward pass (target: under 1.5x).

4 layers, 8 heads, 128 tokens ([CLS] + 8×8 image patches + 63 text tokens), d_model 256,
batch 2 (short calls: more of them dodge other jobs on a shared machine), one thread. Each
timing is the minimum over repeats, baseline and capture interleaved in one process so
machine noise hits both alike; ratios are what to read.

    .venv/bin/python bench/bench_attention.py [--repeats 50] [--batch 2] [--pt2]

``--pt2`` also times ``trace_exported_attention`` (fx.Interpreter) against calling the same
exported program's module directly; exporting takes a while.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from estimators.attention import capture_attention, trace_exported_attention
from tests.fixtures.attention_models import (
    export_pt2,
    mha_transformer,
    padded_inputs,
    sdpa_transformer,
)

SIZE = {"d_model": 256, "n_heads": 8, "n_layers": 4, "image_size": 32, "patch": 4,
        "text_len": 63}


def best_of(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Minimum wall time of each function, calls interleaved, after one warm-up each."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--pt2", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {"nn.MultiheadAttention (TransformerEncoder)": mha_transformer(**SIZE),
              "F.scaled_dot_product_attention": sdpa_transformer(**SIZE),
              "explicit softmax": sdpa_transformer(fused=False, **SIZE)}
    print(f"batch {args.batch}, N = 128 tokens, 4 layers x 8 heads, d_model 256, 1 thread, "
          f"min of {args.repeats}")
    print(f"{'model':44s} {'plain ms':>9s} {'capture':>9s} {'ratio':>6s} "
          f"{'last+f16':>9s} {'ratio':>6s}")
    for name, model in models.items():
        inputs = padded_inputs(model, batch_size=args.batch)
        assert len(capture_attention(model, inputs)) == 4, name

        def plain(model=model, inputs=inputs) -> object:
            with torch.no_grad():
                return model(inputs)

        times = best_of({
            "plain": plain,
            "capture": lambda model=model, inputs=inputs: capture_attention(model, inputs),
            "lean": lambda model=model, inputs=inputs: capture_attention(
                model, inputs, layers=[-1], dtype=torch.float16),
        }, args.repeats)
        print(f"{name:44s} {1e3 * times['plain']:9.2f} {1e3 * times['capture']:9.2f} "
              f"{times['capture'] / times['plain']:6.2f} {1e3 * times['lean']:9.2f} "
              f"{times['lean'] / times['plain']:6.2f}")
    if args.pt2:
        model = models["F.scaled_dot_product_attention"]
        inputs = padded_inputs(model, batch_size=args.batch)
        with tempfile.TemporaryDirectory() as tmp:
            program = torch.export.load(export_pt2(model.module, inputs, Path(tmp)))
        exported = program.module()

        def plain_pt2() -> object:
            with torch.no_grad():
                return exported(**inputs)

        times = best_of({"plain": plain_pt2,
                         "capture": lambda: trace_exported_attention(program, inputs)},
                        args.repeats)
        print(f"{'.pt2 (SDPA) via fx.Interpreter':44s} {1e3 * times['plain']:9.2f} "
              f"{1e3 * times['capture']:9.2f} {times['capture'] / times['plain']:6.2f}")


if __name__ == "__main__":
    main()
