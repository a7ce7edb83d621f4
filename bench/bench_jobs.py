"""Throughput of a dataset summary run as a job on Dask, against doing the work in-process.

Run: ``.venv/bin/python bench/bench_jobs.py [--n 2000] [--repeat 3] [--model tensor_fusion]``.

The summary is the ``interaction_types`` job (exact modality Shapley values for the
predicted class of every instance, their dominance / complement / conflict mix) over ``--n``
instances of the ``digits-question`` demo (image 1×28×28 + question tokens). Baselines, in
this process, one thread:

- ``forward``: the plain batched forward passes the summary needs (2^M coalition rows per
  instance, M = 2 modalities, batches of 256 instances);
- ``fwd+bwd``: one batched forward + backward per instance (a gradient attribution pass);
- ``direct``: ``estimators.interaction_types.interaction_types`` on the whole data at once.

The job runs through the real ``JobService`` (a fresh SQLite database per run, so nothing is
deduplicated) on an embedded ``LocalCluster`` with 1, then 2 worker processes (1 thread
each), after one warm-up job that loads the model and data into the workers. Every time is
the minimum over ``--repeat`` runs. On a machine with fewer free cores than workers the
2-worker speed-up is bounded by the cores, not by the job system.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from backend.core.config import Settings
from backend.core.security import ensure_project, ensure_user
from backend.db import Database, Job
from backend.services.cluster import Cluster
from backend.services.jobs import JobService
from backend.workers.analyses import ANALYSES
from backend.workers.tasks import Described
from estimators.data import MultimodalDataset
from estimators.interaction_types import interaction_types
from estimators.model import MultimodalModel

SCENARIO = "digits-question"


@dataclass(frozen=True)
class DemoSources:
    """The demo model and ``n`` instances of its data (test split, tiled if shorter)."""

    model_name: str
    n: int

    def describe(self, session, project_id: int, model_ids: list[int],
                 dataset_id: int) -> Described:
        return Described(n=self.n, model_hashes={m: self.model_name for m in model_ids},
                         dataset_hash=f"{SCENARIO}-{self.n}")

    def load_model(self, model_id: int) -> MultimodalModel:
        from estimators.zoo.scenarios import get_scenario

        return get_scenario(SCENARIO).model(self.model_name).load()

    def load_dataset(self, dataset_id: int) -> MultimodalDataset:
        from estimators.zoo.scenarios import get_scenario

        data = get_scenario(SCENARIO).dataset("test")
        index = torch.arange(self.n) % len(data)
        return data.subset(index)


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_job(cluster: Cluster, sources: DemoSources, workdir: Path) -> float:
    """Submit one interaction_types job on a fresh database; seconds until it succeeded."""
    settings = Settings(data_dir=Path(tempfile.mkdtemp(dir=workdir)), register_demos=False)
    db = Database(settings.resolved_database_url)
    db.create_all()
    with db.session() as session:
        user = ensure_user(session, "bench")
        project = ensure_project(session, "bench")
    service = JobService(settings, db, analyses=ANALYSES, sources=sources, cluster=cluster,
                         poll_s=0.1)
    service.start()
    try:
        start = time.perf_counter()
        job, _ = service.submit(user, project.id, "interaction_types",
                                {"dataset_id": 1, "model_id": 1})
        while True:
            with db.session() as session:
                row = session.get(Job, job.id)
            if row.state in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        if row.state != "succeeded":
            raise RuntimeError(f"job ended {row.state}: {row.error}")
        return elapsed
    finally:
        service.stop()
        db.dispose()


def baselines(sources: DemoSources, repeat: int) -> dict[str, float]:
    model = sources.load_model(1)
    data = sources.load_dataset(1)
    inputs = {m.name: data.inputs[m.name].to(m.torch_dtype) for m in model.spec.modalities}
    n_coalitions = 2 ** len(model.spec.names)

    def forward() -> None:
        with torch.no_grad():
            for start in range(0, sources.n, 256):
                rows = {k: v[start:start + 256] for k, v in inputs.items()}
                for _ in range(n_coalitions):
                    model(rows, check=False)

    def forward_backward() -> None:
        for start in range(0, sources.n, 256):
            rows = {k: v[start:start + 256] for k, v in inputs.items()}
            feats = {k: v.detach().requires_grad_(True) for k, v in model.embed(rows).items()}
            out = model.forward_embedded(rows, feats)
            grads = torch.autograd.grad(out.max(-1).values.sum(), list(feats.values()))
            del grads

    def direct() -> None:
        with torch.no_grad():
            predicted = torch.cat([model(r, check=False).argmax(-1)
                                   for r in ({k: v[s:s + 256] for k, v in inputs.items()}
                                             for s in range(0, sources.n, 256))])
        interaction_types(model, inputs, target=predicted, output="softmax")

    return {"forward": best_of(repeat, forward), "fwd+bwd": best_of(repeat, forward_backward),
            "direct": best_of(repeat, direct)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default="tensor_fusion")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sources = DemoSources(args.model, args.n)
    base = baselines(sources, args.repeat)
    jobs: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            cluster = Cluster(Settings(data_dir=Path(tmp)), n_workers=workers)
            cluster.client().wait_for_workers(workers, timeout=300)
            try:
                run_job(cluster, sources, Path(tmp))  # warm-up: load model and data
                jobs[workers] = best_of(args.repeat,
                                        lambda c=cluster: run_job(c, sources, Path(tmp)))
            finally:
                cluster.close()
    print(f"interaction_types over {args.n} instances of {SCENARIO}/{args.model}, "
          f"min of {args.repeat}")
    print(f"{'what':<28}{'seconds':>10}{'vs forward':>12}{'vs fwd+bwd':>12}{'vs direct':>11}")
    rows = [("forward (2^M coalitions)", base["forward"]), ("fwd+bwd", base["fwd+bwd"]),
            ("direct estimator", base["direct"]), ("job, 1 worker", jobs[1]),
            ("job, 2 workers", jobs[2])]
    for name, seconds in rows:
        print(f"{name:<28}{seconds:>10.3f}{seconds / base['forward']:>12.2f}"
              f"{seconds / base['fwd+bwd']:>12.2f}{seconds / base['direct']:>11.2f}")
    print(f"speed-up 2 workers vs 1: {jobs[1] / jobs[2]:.2f}x")


if __name__ == "__main__":
    main()
