"""Sandbox cost: cold start of a ``.pt2`` host and warm call latency against in-process eager.

    .venv/bin/python -m bench.bench_sandbox [--repeat 30] [--cold 2]

Cold start = ``pool.get`` (spawn, confine, import torch, load + unflatten the program) plus
the first ``logits`` call; measured confined and unconfined (namespaces and Landlock off) to
show what the confinement itself costs. Warm rows compare the host's ``logits`` and
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


def cold_start(path: Path, model: MultimodalModel, limits: SandboxLimits,
               data_dir: Path) -> tuple[float, float, dict]:
    """Wall seconds to first logits, host CPU seconds, and the host's own report."""
    inputs = model.spec.example_inputs(1)
    cpu_before = _children_cpu()
    pool = SandboxPool(Settings(data_dir=data_dir), limits)
    start = time.perf_counter()
    sm = pool.get(path, model.spec)
    sm.logits(inputs)
    wall = time.perf_counter() - start
    report = sm.sandbox
    pool.shutdown()
    return wall, _children_cpu() - cpu_before, report


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
    parser.add_argument("--cold", type=int, default=2, help="cold starts per variant")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    model = cnn_text()
    path = export_pt2(model, tmp / "cnn_text.pt2")

    print("cold start (spawn + confine + import torch + load + first logits)")
    rows = {}
    for label, limits in (("confined", SandboxLimits()),
                          ("unconfined", SandboxLimits(namespaces=False, landlock=False))):
        runs = [cold_start(path, model, limits, tmp / "data") for _ in range(args.cold)]
        rows[label] = min(r[0] for r in runs)
        report = runs[0][2]
        print(f"  {label:<11} wall min {rows[label]:6.2f} s  host CPU min "
              f"{min(r[1] for r in runs):5.2f} s  (import+load in host {report['load_s']:.2f} s;"
              f" namespaces={report['namespaces']} landlock_abi={report['landlock_abi']} "
              f"network={report['network']})")
    print(f"  confinement cost ratio confined/unconfined: "
          f"{rows['confined'] / rows['unconfined']:.2f}")

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
