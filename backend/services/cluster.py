"""The Dask cluster jobs run on: embedded by default, an external scheduler for scale-out.

The embedded cluster is a ``distributed.LocalCluster`` of worker *processes* (not threads):
a model that segfaults, leaks or is killed by the OOM killer takes one worker down, the nanny
restarts it, and the API process never notices beyond a failed task. With
``CROSSLENS_DASK_SCHEDULER`` set, the same code connects to that scheduler instead; its workers
must run the same crosslens version and see the same data directory and database.
"""

from __future__ import annotations

import logging
import os

import dask
from distributed import Client, LocalCluster

from backend.core.config import Settings

log = logging.getLogger("crosslens.cluster")

# One OpenMP thread that does not spin: tiny models on few cores run far faster this way,
# and several workers on one machine do not fight over cores.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def default_worker_count() -> int:
    """One worker process per core, at most four (each holds its own copy of the models)."""
    return max(1, min(4, os.cpu_count() or 1))


class Cluster:
    """Owns the Dask client (and the embedded cluster, if any) for one API process."""

    def __init__(self, settings: Settings, *, n_workers: int | None = None) -> None:
        self.settings = settings
        self.n_workers = n_workers or default_worker_count()
        self._local: LocalCluster | None = None
        self._client: Client | None = None

    @property
    def external(self) -> bool:
        return bool(self.settings.dask_scheduler)

    def client(self) -> Client:
        """The client, connecting or starting the embedded cluster on first use."""
        if self._client is None:
            if self.external:
                log.info("connecting to Dask scheduler %s", self.settings.dask_scheduler)
                self._client = Client(self.settings.dask_scheduler, timeout=30)
            else:
                self._local = start_local_cluster(self.n_workers)
                self._client = Client(self._local)
        return self._client

    @property
    def started(self) -> bool:
        return self._client is not None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._local is not None:
            self._local.close()
            self._local = None


# Imported once by the fork server that worker processes are forked from: a worker (and a
# worker restarted after a crash) starts with torch and the analyses already imported,
# instead of paying seconds of imports each time.
FORKSERVER_PRELOAD = ["distributed", "numpy", "torch", "sklearn.cluster", "estimators.model",
                      "estimators.pid", "estimators.ablation", "estimators.interaction_types",
                      "estimators.emap", "backend.workers.tasks", "backend.workers.analyses"]


def use_preloaded_forkserver() -> None:
    """Make this process' Dask nannies fork non-daemonic workers (a worker starts ``.pt2``
    sandbox hosts as its children) from a preloaded fork server.

    Process-wide on purpose: nannies read both settings again whenever they restart a worker.
    """
    from multiprocessing import get_context

    from distributed.utils import get_mp_context

    for key, value in WORKER_ENV.items():  # the fork server passes them on to every worker
        os.environ.setdefault(key, value)
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver",
                     "distributed.worker.daemon": False})
    get_mp_context()  # lets distributed set its own preload first; ours replaces it
    get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)


def start_local_cluster(n_workers: int) -> LocalCluster:
    """Worker processes, one thread each, no dashboard; a task whose worker dies is not
    retried by the scheduler (``allowed-failures: 0``) because the job service retries whole
    jobs with its own bounded count and a readable reason."""
    use_preloaded_forkserver()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, env=dict(WORKER_ENV),
                               silence_logs=logging.WARNING)
    log.info("embedded Dask cluster: %d worker processes at %s", n_workers,
             cluster.scheduler_address)
    return cluster
