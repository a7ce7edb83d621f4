"""Durable dataset-level analyses: a job table, a lease-fenced driver, execution on Dask.

Life of a job. ``submit`` validates the request, hashes it (kind, parameters, project, and the
content hashes of the model(s) and dataset) and inserts a ``queued`` row; an identical request
finds the queued, running or succeeded row instead (the unique ``live_key`` column makes this
hold under concurrent submissions too). A dispatcher thread in each API process claims queued
rows and rows whose lease expired, with an atomic compare-and-set ``UPDATE`` that writes its
own ``lease_owner`` and bumps ``attempts``; a heartbeat thread keeps its leases fresh. The
driver splits the dataset into chunks of instances, runs them on Dask worker processes a few
at a time (memory stays bounded, progress is real), stores each finished chunk under the job's
directory (so a retry skips it and progress never goes back), then runs the analysis'
reduction on a worker and writes the result JSON (temp file, fsync, rename: never half
written) before marking the row ``succeeded``. Every write of the driver is fenced by
``lease_owner = me AND state = 'running'``: a cancelled job, or one another process took over,
stops at the next check and writes nothing.

Failures. A worker process that dies (SIGKILL, OOM, segfault) fails its task with
``KilledWorker``; the job goes back to ``queued`` and is retried up to ``max_attempts`` times,
then ends ``failed`` with a readable reason. An error raised by the analysis itself (bad
input, estimator error) is deterministic and fails the job at once with its message. An API
process that dies leaves its leases to expire; the next process (or another replica) takes
the jobs over.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from distributed import Future, wait
from distributed.scheduler import KilledWorker
from pydantic import ValidationError
from safetensors.torch import load_file, save
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from backend.core.config import Settings
from backend.db import Database, Job, User, utcnow
from backend.services.cluster import Cluster
from backend.workers import tasks
from backend.workers.analyses import ANALYSES, Analysis, CatalogSources

log = logging.getLogger("crosslens.jobs")

FINAL_STATES = ("succeeded", "failed", "cancelled")


class JobRequestError(ValueError):
    """The request cannot become a job; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


class WorkerLost(RuntimeError):
    """A worker process died (or the scheduler went away) under one of the job's tasks."""


def request_key(project_id: int, kind: str, params: Mapping[str, Any],
                described: tasks.Described) -> str:
    """Content hash of a request: identical analyses of identical bytes share one result."""
    blob = json.dumps({"project": project_id, "kind": kind, "params": params,
                       "models": {str(k): v for k, v in sorted(described.model_hashes.items())},
                       "dataset": described.dataset_hash}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write to a temp file in the same directory, (fsync,) rename: readers see all or
    nothing. ``durable=False`` skips the fsync, for files that are only a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class JobService:
    """Submits, runs and supervises jobs for one API process (``app.state.jobs``).

    The Dask cluster is started lazily, when the first job is claimed, so an API that never
    runs a job never pays for worker processes.
    """

    def __init__(self, settings: Settings, db: Database, *,
                 analyses: Mapping[str, Analysis] | None = None,
                 sources: tasks.Sources | None = None, cluster: Cluster | None = None,
                 n_workers: int | None = None, max_running: int = 4, lease_s: float = 10.0,
                 heartbeat_s: float = 2.0, poll_s: float = 0.25, max_attempts: int = 3,
                 chunks_in_flight: int | None = None) -> None:
        self.settings = settings
        self.db = db
        self.analyses = dict(analyses if analyses is not None else ANALYSES)
        self.sources = sources or CatalogSources(settings)
        self.cluster = cluster or Cluster(settings, n_workers=n_workers)
        self._owns_cluster = cluster is None
        self.max_running = max_running
        self.lease = dt.timedelta(seconds=lease_s)
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.chunks_in_flight = chunks_in_flight
        self.owner = f"{os.uname().nodename[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.jobs_dir = settings.data_dir / "jobs"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: cf.ThreadPoolExecutor | None = None
        self._active: set[int] = set()
        self._active_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._cluster_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._pool = cf.ThreadPoolExecutor(self.max_running, thread_name_prefix="job")
        for target, name in ((self._dispatch_loop, "job-dispatch"),
                             (self._heartbeat_loop, "job-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop claiming, let drivers notice, hand running jobs back to the queue (so the next
        process resumes them at once instead of waiting for the lease to expire)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self.db.session() as session:
            session.execute(update(Job).where(Job.lease_owner == self.owner,
                                              Job.state == "running")
                            .values(state="queued", lease_owner=None, heartbeat_at=None,
                                    attempts=Job.attempts - 1,
                                    message="paused: the API stopped; resumes on restart"))
        if self._owns_cluster:
            self.cluster.close()

    def client(self):
        with self._cluster_lock:
            return self.cluster.client()

    # -- requests -------------------------------------------------------------------------

    def analysis(self, kind: str) -> Analysis:
        if kind not in self.analyses:
            raise JobRequestError(422, f"unknown job kind {kind!r}; choose one of "
                                       f"{sorted(self.analyses)}")
        return self.analyses[kind]

    def submit(self, user: User, project_id: int, kind: str,
               params: Mapping[str, Any]) -> tuple[Job, bool]:
        """The job for this request and whether it was created (False: an identical queued,
        running or succeeded job already exists and is returned instead)."""
        analysis = self.analysis(kind)
        missing = analysis.unavailable()
        if missing:
            raise JobRequestError(422, f"{kind} is not available yet: {missing}")
        try:
            parsed = analysis.params.model_validate(dict(params))
        except ValidationError as exc:
            raise JobRequestError(422, [{k: v for k, v in e.items() if k in ("loc", "msg")}
                                        for e in exc.errors()]) from None
        normalized = parsed.model_dump(mode="json")
        model_ids, dataset_id = analysis.inputs(parsed)
        with self.db.session() as session:
            try:
                described = self.sources.describe(session, project_id, model_ids, dataset_id)
            except LookupError as exc:
                raise JobRequestError(404, str(exc)) from None
        problem = analysis.check(parsed, described)
        if problem:
            raise JobRequestError(422, problem)
        key = request_key(project_id, kind, normalized, described)
        with self._submit_lock:
            for _ in range(3):
                existing = self._live(key)
                if existing is not None:
                    return existing, False
                try:
                    with self.db.session() as session:
                        job = Job(project_id=project_id, owner_id=user.id, kind=kind,
                                  params=normalized, key=key, live_key=key, state="queued",
                                  progress=0.0, message="queued", attempts=0)
                        session.add(job)
                        session.flush()
                        session.refresh(job, ["owner"])
                    return job, True
                except IntegrityError:
                    continue  # another process inserted the same key first; take that one
        raise JobRequestError(409, "could not register the job; please retry")

    def _live(self, key: str) -> Job | None:
        with self.db.session() as session:
            job = session.scalar(select(Job).where(Job.live_key == key))
            if job is not None:
                session.refresh(job, ["owner"])
            return job

    def cancel(self, job_id: int, by: str) -> Job:
        """Queued or running → ``cancelled`` now; the driver of a running job notices within
        a poll interval, cancels its pending chunks and writes nothing more."""
        with self.db.session() as session:
            session.execute(update(Job).where(Job.id == job_id,
                                              Job.state.in_(("queued", "running")))
                            .values(state="cancelled", live_key=None, finished_at=utcnow(),
                                    message=f"cancelled by {by}"))
            job = session.get(Job, job_id)
            session.refresh(job, ["owner"])
            return job

    def result_path(self, job: Job) -> Path | None:
        return self.jobs_dir / job.result_path if job.result_path else None

    def read_result(self, job: Job) -> dict[str, Any]:
        path = self.result_path(job)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"the result of job {job.id} is missing from storage")
        return json.loads(path.read_text())

    # -- dispatcher and heartbeat ---------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._dispatch_once()
            except Exception:  # keep dispatching; a broken database is logged, not fatal
                log.exception("job dispatcher error")

    def _dispatch_once(self) -> None:
        with self._active_lock:
            free = self.max_running - len(self._active)
        if free <= 0:
            return
        cutoff = utcnow() - self.lease
        claimable = or_(Job.state == "queued",
                        and_(Job.state == "running",
                             or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)))
        with self._active_lock:
            mine = set(self._active)
        with self.db.session() as session:
            candidates = session.scalars(select(Job.id).where(claimable)
                                         .order_by(Job.created_at, Job.id)
                                         .limit(free + len(mine))).all()
        for job_id in [c for c in candidates if c not in mine][:free]:
            if self._claim(job_id, claimable):
                with self._active_lock:
                    self._active.add(job_id)
                assert self._pool is not None
                self._pool.submit(self._drive_guarded, job_id)

    def _claim(self, job_id: int, claimable) -> bool:
        now = utcnow()
        with self.db.session() as session:
            attempts = session.scalar(select(Job.attempts).where(Job.id == job_id))
            if attempts is None:
                return False
            if attempts >= self.max_attempts:
                session.execute(update(Job).where(Job.id == job_id, claimable).values(
                    state="failed", live_key=None, finished_at=now, lease_owner=None,
                    error=f"gave up after {attempts} attempts: the process running it stopped "
                          "each time (see the server log)"))
                return False
            claimed = session.execute(
                update(Job).where(Job.id == job_id, Job.attempts == attempts, claimable)
                .values(state="running", lease_owner=self.owner, heartbeat_at=now,
                        attempts=attempts + 1, error=None,
                        started_at=func.coalesce(Job.started_at, now),
                        message="starting" if attempts == 0 else
                        f"resuming (attempt {attempts + 1} of {self.max_attempts})"))
            return claimed.rowcount == 1

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._active_lock:
                active = list(self._active)
            if not active:
                continue
            try:
                with self.db.session() as session:
                    session.execute(update(Job).where(Job.id.in_(active),
                                                      Job.lease_owner == self.owner,
                                                      Job.state == "running")
                                    .values(heartbeat_at=utcnow()))
            except Exception:
                log.exception("job heartbeat error")

    # -- the driver -----------------------------------------------------------------------

    def _fenced(self, job_id: int, **values: Any) -> bool:
        """Update the job only while this process holds its lease and it is running."""
        with self.db.session() as session:
            res = session.execute(update(Job).where(Job.id == job_id,
                                                    Job.lease_owner == self.owner,
                                                    Job.state == "running").values(**values))
            return res.rowcount == 1

    def _still_mine(self, job_id: int) -> bool:
        """False once the job was cancelled, taken over, or this process is stopping."""
        if self._stop.is_set():
            return False
        with self.db.session() as session:
            row = session.execute(select(Job.state, Job.lease_owner)
                                  .where(Job.id == job_id)).one_or_none()
        return row is not None and row.state == "running" and row.lease_owner == self.owner

    def _drive_guarded(self, job_id: int) -> None:
        try:
            self._drive(job_id)
        except WorkerLost as exc:
            self._retry_or_fail(job_id, str(exc))
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._fenced(job_id, state="failed", live_key=None, finished_at=utcnow(),
                         lease_owner=None, error=readable_error(exc),
                         message="failed")
        finally:
            with self._active_lock:
                self._active.discard(job_id)
            with self.db.session() as session:
                state = session.scalar(select(Job.state).where(Job.id == job_id))
            if state == "cancelled":
                shutil.rmtree(self.jobs_dir / str(job_id), ignore_errors=True)

    def _retry_or_fail(self, job_id: int, reason: str) -> None:
        with self.db.session() as session:
            attempts = session.scalar(select(Job.attempts).where(Job.id == job_id)) or 0
        if attempts < self.max_attempts:
            self._fenced(job_id, state="queued", lease_owner=None, heartbeat_at=None,
                         message=f"{reason}; retrying (attempt {attempts + 1} of "
                                 f"{self.max_attempts})")
        else:
            self._fenced(job_id, state="failed", live_key=None, finished_at=utcnow(),
                         lease_owner=None, message="failed",
                         error=f"{reason}, {attempts} times; giving up. The model may crash "
                               "or need more memory than a worker has.")

    def _context(self, job: Job) -> tuple[tasks.JobContext, int]:
        analysis = self.analysis(job.kind)
        params = analysis.params.model_validate(job.params)
        model_ids, dataset_id = analysis.inputs(params)
        with self.db.session() as session:
            described = self.sources.describe(session, job.project_id, model_ids, dataset_id)
        ctx = tasks.JobContext(job_id=job.id, analysis=analysis, params=params,
                               model_ids=tuple(model_ids), dataset_id=dataset_id,
                               model_hashes=described.model_hashes,
                               dataset_hash=described.dataset_hash,
                               model_names=described.model_names, sources=self.sources)
        return ctx, described.n

    def _drive(self, job_id: int) -> None:
        with self.db.session() as session:
            job = session.get(Job, job_id)
        try:
            ctx, n = self._context(job)
        except LookupError as exc:
            raise ValueError(f"an input of this job is gone: {exc}") from None
        analysis: Analysis = ctx.analysis
        chunks = analysis.chunks(n, ctx.params)
        parts_dir = self.jobs_dir / str(job_id) / "parts"
        parts = _stored_parts(parts_dir, len(chunks))  # from an earlier attempt
        done = set(parts)
        total = len(chunks)
        map_share = analysis.map_share

        def report(n_done: int) -> bool:
            return self._fenced(job_id, progress=round(map_share * n_done / total, 4),
                                message=f"{analysis.label}: {n_done} of {total} chunks "
                                        f"({min(n, chunks[n_done - 1][1]) if n_done else 0} "
                                        f"of {n} instances)")

        client = self.client()
        if not report(len(done)):
            return
        todo = [i for i in range(len(chunks)) if i not in done]
        # Enough queued chunks that no worker idles while the driver books a result; few
        # enough that memory stays bounded and a cancel has little to throw away.
        window = self.chunks_in_flight or max(4, 4 * _total_threads(client))
        # Unique task keys: a scheduler shared by other API processes (or that outlived a
        # database) must never hand back another run's result for a key it already knows.
        run = f"job{job_id}-a{job.attempts}-{uuid.uuid4().hex[:12]}"
        pending: dict[Future, int] = {}
        try:
            while todo or pending:
                while todo and len(pending) < window:
                    i = todo.pop(0)
                    start, stop = chunks[i]
                    fut = client.submit(tasks.run_chunk, ctx, start, stop, pure=False,
                                        key=f"{run}-chunk{i}")
                    pending[fut] = i
                finished = _wait_some(list(pending), self.poll_s)
                if not finished and not self._still_mine(job_id):
                    return
                for fut in finished:
                    i = pending.pop(fut)
                    parts[i] = _result(fut, f"chunk {i + 1} of {total}")
                    atomic_write_bytes(parts_dir / f"{i}.safetensors", _pack(parts[i]),
                                       durable=False)
                    done.add(i)
                if finished and not report(len(done)):
                    return
        finally:
            for fut in pending:
                fut.cancel()
        combined = _concat([parts[i] for i in range(total)])
        if not self._fenced(job_id, message=f"{analysis.label}: combining {n} instances"):
            return
        fut = client.submit(tasks.run_reduce, ctx, combined, pure=False,
                            key=f"{run}-reduce")
        try:
            while not _wait_some([fut], self.poll_s):
                if not self._still_mine(job_id):
                    return
            result = _result(fut, "the final step")
        finally:
            fut.cancel()
        rel = f"{job_id}/result.json"
        atomic_write_bytes(self.jobs_dir / rel, json.dumps(result, allow_nan=False).encode())
        if self._fenced(job_id, state="succeeded", progress=1.0, result_path=rel,
                        finished_at=utcnow(), lease_owner=None, message="done"):
            shutil.rmtree(parts_dir, ignore_errors=True)
        else:  # cancelled or taken over at the last moment: that outcome stands
            (self.jobs_dir / rel).unlink(missing_ok=True)


def readable_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (ValueError, KeyError, TypeError, RuntimeError)):
        return text[:2000]
    return f"{type(exc).__name__}: {text}"[:2000]


def _total_threads(client) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:
        return 1


def _wait_some(futures: list[Future], timeout: float) -> list[Future]:
    """The futures that are done after at most ``timeout`` seconds (maybe none)."""
    try:
        done, _ = wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
    except TimeoutError:
        return []
    return list(done)


def _result(fut: Future, what: str) -> Any:
    try:
        return fut.result()
    except KilledWorker:
        raise WorkerLost(f"a worker process died while running {what}") from None
    except (OSError, cf.CancelledError) as exc:
        raise WorkerLost(f"lost contact with the worker running {what} "
                         f"({type(exc).__name__})") from None


def _stored_parts(parts_dir: Path, total: int) -> dict[int, dict[str, torch.Tensor]]:
    """Chunk outputs an earlier attempt stored; an unreadable file is recomputed."""
    parts = {}
    for i in range(total):
        path = parts_dir / f"{i}.safetensors"
        if path.is_file():
            try:
                parts[i] = load_file(path)
            except Exception:  # torn by a crash (parts are written without fsync)
                path.unlink(missing_ok=True)
    return parts


def _pack(part: Mapping[str, torch.Tensor]) -> bytes:
    return save({k: v.contiguous() for k, v in part.items()})


def _concat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if not parts:
        return {}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

