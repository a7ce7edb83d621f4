"""Sandbox cost: cold start of a ``.pt2`` host and warm call latency against in-process eager.

    .venv/bin/python -m bench.bench_sandbox [--repeat 30] [--cold 2]

Cold start = ``pool.get`` plus the first ``logits`` call, for the first host of a pool (which
also starts the zygote that imports torch once) and for further hosts (forked from the warm
zygote: confine, load + unflatten); measured confined and unconfined (namespaces and
Landlock off) to show what the confinement itself costs. Warm rows compare the host's ``logits`` and
``gradients`` ops with the same computation in this process on the eager module, and with
the unflattened program in this process (separating IPC cost from the program's own cost).
Timings are minima over repeats (the machine is shared; medians are printed too).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from backend.core.config import Settings
from backend.services.sandbox import SandboxedModel, SandboxLimits, SandboxPool
from backend.workers.sandbox_host import LoadedProgram
from estimators.model import MultimodalModel, apply_output, select_target
from tests.fixtures.models import cnn_text
from tests.fixtures.pt2 import export_pt2


def _times(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_starts(path: Path, model: MultimodalModel, limits: SandboxLimits, data_dir: Path,
                n_next: int) -> tuple[float, float, list[float], dict]:
    """Wall seconds to the first logits of a fresh pool (zygote start included), the
    zygote's + hosts' CPU seconds, wall seconds for each further host (forked from the warm
    zygote), and the first host's report."""
    inputs = model.spec.example_inputs(1)
    cpu_before = _children_cpu()
    pool = SandboxPool(Settings(data_dir=data_dir), limits)
    start = time.perf_counter()
    sm = pool.get(path, model.spec)
    sm.logits(inputs)
    first = time.perf_counter() - start
    report = sm.sandbox
    nexts = []
    for i in range(n_next):  # other limits -> another host for the same program
        start = time.perf_counter()
        pool.get(path, model.spec, limits=replace(limits, cpu_seconds=limits.cpu_seconds + i + 1)
                 ).logits(inputs)
        nexts.append(time.perf_counter() - start)
    pool.shutdown()
    return first, _children_cpu() - cpu_before, nexts, report


def eager_gradients(model: MultimodalModel, inputs: dict, target: int) -> dict:
    features = {k: v.clone().requires_grad_(True) for k, v in model.embed(inputs).items()}
    out = select_target(apply_output(model.forward_embedded(inputs, features), "logits"), target)
    names = list(features)
    return dict(zip(names, torch.autograd.grad(out.sum(), [features[n] for n in names]),
                    strict=True))


def _warm_calls(model: MultimodalModel, in_process: MultimodalModel, sm: SandboxedModel,
                inputs: dict) -> dict[str, tuple[Callable[[], object], ...]]:
    """Per op: (eager here, unflattened program here, sandbox host)."""
    return {"logits": (lambda: model(inputs), lambda: in_process(inputs),
                       lambda: sm.logits(inputs)),
            "gradients": (lambda: eager_gradients(model, inputs, 0),
                          lambda: eager_gradients(in_process, inputs, 0),
                          lambda: sm.gradients(inputs, 0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--cold", type=int, default=2, help="fresh pools per variant")
    parser.add_argument("--next", type=int, default=5, help="further hosts per pool")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    model = cnn_text()
    path = export_pt2(model, tmp / "cnn_text.pt2")

    print("cold start: spawn zygote (imports torch once) + fork host + confine + load + "
          "first logits")
    rows = {}
    for label, limits in (("confined", SandboxLimits()),
                          ("unconfined", SandboxLimits(namespaces=False, landlock=False))):
        runs = [cold_starts(path, model, limits, tmp / "data", args.next) for _ in range(args.cold)]
        first = min(r[0] for r in runs)
        nexts = [t for r in runs for t in r[2]]
        rows[label] = (first, min(nexts))
        report = runs[0][3]
        print(f"  {label:<11} first host {first:6.2f} s   next host min {min(nexts):5.2f} s "
              f"median {statistics.median(nexts):5.2f} s   (children CPU min "
              f"{min(r[1] for r in runs):5.2f} s; host fork->ready {report['load_s']:.2f} s; "
              f"namespaces={report['namespaces']} landlock_abi={report['landlock_abi']} "
              f"network={report['network']})")
    print(f"  ratio confined/unconfined: first host "
          f"{rows['confined'][0] / rows['unconfined'][0]:.2f}, next host "
          f"{rows['confined'][1] / rows['unconfined'][1]:.2f}")

    with open(path, "rb") as f:
        in_process = LoadedProgram.load(f, model.spec.model_dump_json()).model
    pool = SandboxPool(Settings(data_dir=tmp / "data"))
    sm: SandboxedModel = pool.get(path, model.spec)
    print(f"\nwarm calls (min / median over {args.repeat}; ratio = sandbox min / eager min)")
    print(f"  {'call':<22}{'eager':>16}{'program here':>18}{'sandbox':>18}{'ratio':>8}")
    for batch in (1, 32):
        inputs = model.spec.example_inputs(batch, seed=batch)
        for op, fns in _warm_calls(model, in_process, sm, inputs).items():
            with torch.inference_mode(op == "logits"):
                eager_t = _times(fns[0], args.repeat)
                program_t = _times(fns[1], args.repeat)
            sandbox_t = _times(fns[2], args.repeat)
            cells = [f"{min(t) * 1e3:7.2f}/{statistics.median(t) * 1e3:7.2f}ms"
                     for t in (eager_t, program_t, sandbox_t)]
            print(f"  {op + f' B={batch}':<22}{cells[0]:>16}{cells[1]:>18}{cells[2]:>18}"
                  f"{min(sandbox_t) / min(eager_t):8.1f}")
    pool.shutdown()


if __name__ == "__main__":
    main()
