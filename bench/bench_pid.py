"""Benchmark: our BROJA solver (estimators.pid.pid) against dit's exponential-cone method.

Same random distributions (Dirichlet(1), dense) for both; one BLAS/OpenMP thread. Ours is
timed as the min of ``--repeat`` runs, dit's as the min of ``--dit-repeat`` runs (it is the
slow one); dit is skipped on larger sizes once one of its solves takes over ``--dit-limit``
seconds. Prints time ratios (dit / ours), max |difference| of the four atoms in bits and our
certified duality gap. The machine is shared: rerun and compare ratios, not absolute times.

    .venv/bin/python bench/bench_pid.py [--sizes 2x2x2,10x10x5,...] [--repeat 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from estimators.pid import pid  # noqa: E402

DEFAULT_SIZES = ("2x2x2,3x3x3,5x5x3,10x10x5,15x15x5,20x20x5,30x30x5,40x40x10,50x50x10,"
                 "64x64x10,128x128x10")


def dit_broja(p: np.ndarray) -> np.ndarray:
    """``[R, U1, U2, S]`` in bits from dit's ``PID_BROJA(method="cone")`` (ECOS)."""
    import dit
    from dit.pid import PID_BROJA

    cells = [(idx, v) for idx, v in np.ndenumerate(p) if v > 0]
    dist = dit.Distribution([c for c, _ in cells], [v for _, v in cells])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = PID_BROJA(dist, [[0], [1]], [2], method="cone")
    return np.array([r[((0,), (1,))], r[((0,),)], r[((1,),)], r[((0, 1),)]])


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dit-repeat", type=int, default=2)
    parser.add_argument("--dit-limit", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    pid(np.full((2, 2, 2), 1 / 8))                       # warm-up (imports, BLAS init)
    dit_ok = args.dit_limit > 0                          # --dit-limit 0: ours only
    print(f"{'size':>11} {'dit cone s':>11} {'ours s':>9} {'ratio':>8} {'max|diff|':>10} "
          f"{'gap bits':>9} {'iters':>5} method")
    for size in args.sizes.split(","):
        shape = tuple(int(v) for v in size.split("x"))
        p = rng.dirichlet(np.ones(int(np.prod(shape)))).reshape(shape)
        ours_s, ours = timed(lambda p=p: pid(p), args.repeat)
        dit_s, diff, ratio = float("nan"), float("nan"), float("nan")
        if dit_ok:
            repeat = args.dit_repeat if np.prod(shape) <= 2000 else 1
            dit_s, ref = timed(lambda p=p: dit_broja(p), repeat)
            diff = float(np.abs(ref - ours.atoms()).max())
            ratio = dit_s / ours_s
            dit_ok = dit_s < args.dit_limit
        print(f"{size:>11} {dit_s:11.3f} {ours_s:9.3f} {ratio:8.1f} {diff:10.2e} "
              f"{ours.gap:9.1e} {ours.solver.get('iterations', 0):5d} "
              f"{ours.solver.get('method', 'closed form')}", flush=True)


if __name__ == "__main__":
    main()
