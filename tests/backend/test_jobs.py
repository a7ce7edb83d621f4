"""Jobs on a real Dask LocalCluster (worker processes): dedupe, concurrency, progress,
cancel, a SIGKILLed worker, a job that keeps crashing, an API process killed mid-job.

One cluster (2 worker processes, 1 thread each) is shared by the module; each test gets its
own data directory, SQLite database and ``JobService``. Models and datasets come from
``ToySources`` (the test-only source: toy models with known behaviour, built in the worker),
and the engine mechanics run on ``accuracy``, a small real analysis (forward passes) with an
optional pause per chunk so a test can act while chunks are in flight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import Field
from sqlalchemy import select

from backend.core.config import Settings
from backend.core.security import ensure_project, ensure_user, grant, mint_token
from backend.db import Database, Job
from backend.main import create_app
from backend.services.cluster import Cluster
from backend.services.jobs import JobService, atomic_write_bytes
from backend.workers.analyses import ANALYSES, Analysis, ModelParams
from backend.workers.tasks import Described, Loaded
from estimators.data import MultimodalDataset
from estimators.model import MultimodalModel
from tests.fixtures.models import cnn_text

N_INSTANCES = 400
CHUNK = 50
ROOT = Path(__file__).resolve().parents[2]


# -- the test-only sources and analyses (imported by the workers from this module) ----------


def toy_dataset(n: int = N_INSTANCES) -> MultimodalDataset:
    """Inputs for ``cnn_text``; labels are its predictions with every 4th one shifted, so
    its accuracy is exactly 0.75."""
    model = cnn_text()
    inputs = model.spec.example_inputs(n, seed=1)
    with torch.no_grad():
        labels = model(inputs).argmax(-1)
    flip = torch.arange(n) % 4 == 0
    labels[flip] = (labels[flip] + 1) % model.spec.n_classes
    return MultimodalDataset(inputs, labels)


@dataclass(frozen=True)
class ToySources:
    n: int = N_INSTANCES

    def describe(self, session, project_id: int, model_ids: list[int],
                 dataset_id: int) -> Described:
        for mid in model_ids:
            if mid != 1:
                raise LookupError(f"model {mid} not found in project {project_id}")
        if dataset_id != 1:
            raise LookupError(f"dataset {dataset_id} not found in project {project_id}")
        return Described(n=self.n, model_hashes={m: "cnn-text-v1" for m in model_ids},
                         dataset_hash=f"toy-{self.n}", model_names={1: "cnn_text"})

    def load_model(self, model_id: int) -> MultimodalModel:
        return cnn_text()

    def load_dataset(self, dataset_id: int) -> MultimodalDataset:
        return toy_dataset(self.n)


class AccuracyParams(ModelParams):
    pause_s: float = Field(default=0.0, ge=0.0, le=5.0)


def accuracy_map(loaded: Loaded, chunk: MultimodalDataset, params: AccuracyParams):
    time.sleep(params.pause_s)
    pred = loaded.models[0](chunk.inputs).argmax(-1)
    return {"correct": (pred == chunk.labels).to(torch.int64)}


def accuracy_reduce(loaded: Loaded, parts, params: AccuracyParams):
    return {"n": len(parts["correct"]), "accuracy": float(parts["correct"].float().mean())}


def crash_map(loaded: Loaded, chunk: MultimodalDataset, params: ModelParams):
    os.kill(os.getpid(), signal.SIGKILL)  # what a segfaulting model does to its process
    raise AssertionError("unreachable")


def broken_map(loaded: Loaded, chunk: MultimodalDataset, params: ModelParams):
    raise ValueError("modality 'image' has NaN values; clean the dataset and upload it again")


TEST_ANALYSES = {
    **ANALYSES,
    "accuracy": Analysis("accuracy", "accuracy", AccuracyParams, accuracy_map,
                         accuracy_reduce, chunk_size=CHUNK),
    "crash": Analysis("crash", "crash", ModelParams, crash_map, accuracy_reduce,
                      chunk_size=N_INSTANCES),  # one task: one worker dies per attempt
    "broken": Analysis("broken", "broken", ModelParams, broken_map, accuracy_reduce),
    "future": Analysis("future", "future", ModelParams, broken_map, accuracy_reduce,
                       requires=("estimators.future:fn",)),
}


def make_service(settings: Settings, db: Database, cluster: Cluster, **kw) -> JobService:
    options = {"lease_s": 5.0, "heartbeat_s": 0.3, "poll_s": 0.05, "max_attempts": 3}
    options.update(kw)
    return JobService(settings, db, analyses=TEST_ANALYSES, sources=ToySources(),
                      cluster=cluster, **options)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(Settings(data_dir=tmp_path_factory.mktemp("cluster")), n_workers=2)
    c.client().wait_for_workers(2, timeout=120)
    yield c
    c.close()


@dataclass
class Env:
    client: TestClient
    service: JobService
    db: Database
    settings: Settings
    project_id: int

    def token(self, name: str, role: str = "editor") -> dict[str, str]:
        with self.db.session() as session:
            user = ensure_user(session, name)
            grant(session, user, ensure_project(session, "lab"), role)
            return {"Authorization": f"Bearer {mint_token(session, user)}"}

    def submit(self, headers, job: str = "accuracy", **params):
        params = {"dataset_id": 1, "model_id": 1, **params}
        body = {"project_id": self.project_id, "kind": job,
                "params": {k: v for k, v in params.items() if v is not None}}
        return self.client.post("/api/v1/jobs", json=body, headers=headers)

    def job(self, job_id: int, headers) -> dict:
        r = self.client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: int, headers, until, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id, headers)
            if until(job):
                return job
            assert time.monotonic() < deadline, f"timed out waiting; last: {job}"
            time.sleep(0.05)


def final(job: dict) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


@pytest.fixture
def env(tmp_path: Path, cluster: Cluster) -> Iterator[Env]:
    settings = Settings(data_dir=tmp_path / "data", register_demos=False)
    app = create_app(settings)
    app.state.jobs = make_service(settings, app.state.db, cluster)
    with app.state.db.session() as session:
        project_id = ensure_project(session, "lab").id
    with TestClient(app) as client:
        yield Env(client, app.state.jobs, app.state.db, settings, project_id)
    app.state.db.dispose()


# -- behaviour ------------------------------------------------------------------------------


def test_job_runs_in_chunks_and_stores_the_result_atomically(env: Env) -> None:
    alice = env.token("alice")
    r = env.submit(alice)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "queued" and job["owner"] == "alice" and job["progress"] == 0
    done = env.wait(job["id"], alice, final)
    assert done["state"] == "succeeded", done
    assert done["progress"] == 1.0 and done["attempts"] == 1 and done["finished_at"]
    result = env.client.get(f"/api/v1/jobs/{job['id']}/result", headers=alice).json()
    assert result == {"n": N_INSTANCES, "accuracy": 0.75}
    job_dir = env.settings.data_dir / "jobs" / str(job["id"])
    assert sorted(p.name for p in job_dir.iterdir()) == ["result.json"]  # no temp, no parts


def test_identical_submissions_share_one_job_and_its_cached_result(env: Env) -> None:
    alice, bob = env.token("alice"), env.token("bob")
    first = env.submit(alice)
    again = env.submit(bob)  # same request, other user, while queued or running
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    env.wait(first.json()["id"], alice, final)
    cached = env.submit(bob, pause_s=0.0)  # defaults spelled out: still the same request
    assert cached.status_code == 200 and cached.json()["state"] == "succeeded"
    assert cached.json()["id"] == first.json()["id"]
    other = env.submit(alice, pause_s=0.01)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_concurrent_submissions_from_several_users_dedupe_and_all_finish(env: Env) -> None:
    users = [env.token(f"user{i}") for i in range(6)]
    answers: list = [None] * 12

    def submit(i: int) -> None:
        # two distinct requests, each sent by six threads at once
        answers[i] = env.submit(users[i % 6], pause_s=0.01 * (i % 2))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 2
    assert sorted(a.status_code for a in answers).count(201) == 2
    for job_id in ids:
        assert env.wait(job_id, users[0], final)["state"] == "succeeded"
    with env.db.session() as session:
        assert len(session.scalars(select(Job)).all()) == 2


def test_progress_streams_as_server_sent_events_and_never_goes_back(env: Env) -> None:
    alice = env.token("alice")
    job = env.submit(alice, pause_s=0.4).json()
    events = []
    with env.client.stream("GET", f"/api/v1/jobs/{job['id']}/events", headers=alice) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    assert len(set(progress)) >= 4  # real intermediate steps, not just 0 and 1
    assert events[-1]["state"] == "succeeded" and progress[-1] == 1.0


def test_cancel_stops_a_running_job_soon_and_leaves_no_result(env: Env) -> None:
    alice = env.token("alice")
    job = env.submit(alice, pause_s=0.3).json()
    env.wait(job["id"], alice, lambda j: j["progress"] > 0)
    r = env.client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=alice)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    at_cancel = r.json()["progress"]
    time.sleep(1.0)  # chunks in flight finish; none of them may move the job on
    after = env.job(job["id"], alice)
    assert after["state"] == "cancelled" and after["progress"] == at_cancel < 1
    assert "cancelled by alice" in after["message"]
    r = env.client.get(f"/api/v1/jobs/{job['id']}/result", headers=alice)
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    assert not (env.settings.data_dir / "jobs" / str(job["id"])).exists()
    again = env.submit(alice, pause_s=0.3)  # a cancelled job is not a cached answer
    assert again.status_code == 201 and again.json()["id"] != job["id"]
    env.client.post(f"/api/v1/jobs/{again.json()['id']}/cancel", headers=alice)


def test_a_killed_worker_process_makes_the_job_retry_and_complete(env: Env,
                                                                  cluster: Cluster) -> None:
    alice = env.token("alice")
    job = env.submit(alice, pause_s=0.25).json()
    seen = [env.wait(job["id"], alice, lambda j: j["progress"] > 0)["progress"]]
    for pid in cluster.client().run(os.getpid).values():
        os.kill(pid, signal.SIGKILL)
    while not final(current := env.job(job["id"], alice)):
        seen.append(current["progress"])
        time.sleep(0.05)
    assert current["state"] == "succeeded", current
    assert current["attempts"] == 2
    assert seen == sorted(seen)  # finished chunks were kept: progress did not restart
    result = env.client.get(f"/api/v1/jobs/{job['id']}/result", headers=alice).json()
    assert result == {"n": N_INSTANCES, "accuracy": 0.75}
    cluster.client().wait_for_workers(2, timeout=60)


def test_a_job_that_keeps_killing_its_worker_ends_failed_with_a_reason(env: Env,
                                                                      cluster: Cluster) -> None:
    alice = env.token("alice")
    job = env.submit(alice, job="crash").json()
    done = env.wait(job["id"], alice, final, timeout=120)
    assert done["state"] == "failed" and done["attempts"] == 3
    assert "worker process died" in done["error"] and "giving up" in done["error"]
    cluster.client().wait_for_workers(2, timeout=120)


def test_an_analysis_error_fails_at_once_with_its_message(env: Env) -> None:
    alice = env.token("alice")
    job = env.submit(alice, job="broken").json()
    done = env.wait(job["id"], alice, final)
    assert done["state"] == "failed" and done["attempts"] == 1
    assert done["error"].startswith("modality 'image' has NaN values")


def test_bad_requests_get_clear_4xx_and_leave_no_job(env: Env) -> None:
    alice, viewer = env.token("alice"), env.token("vic", role="viewer")
    assert env.submit(alice, job="nope").status_code == 422
    assert env.submit(alice, pause_s=-1).status_code == 422
    masked_twice = env.submit(alice, job="robustness", kind="mask", levels=[0.0, 2.0])
    assert masked_twice.status_code == 422 and "fractions" in str(masked_twice.json())
    missing = env.submit(alice, model_id=99)
    assert missing.status_code == 404 and "model 99" in missing.json()["detail"]
    assert env.submit(viewer).status_code == 403
    outsider = env.token("olga", role="viewer")
    with env.db.session() as session:
        other = ensure_project(session, "elsewhere").id
    r = env.client.post("/api/v1/jobs", headers=outsider,
                        json={"project_id": other, "kind": "accuracy", "params": {}})
    assert r.status_code == 404
    with env.db.session() as session:
        assert session.scalars(select(Job)).all() == []


def test_a_kind_whose_estimator_is_missing_is_refused_as_not_available_yet(env: Env) -> None:
    alice = env.token("alice")
    r = env.submit(alice, job="future")
    assert r.status_code == 422
    assert r.json()["detail"] == ("future is not available yet: needs estimators.future.fn, "
                                  "which this build does not have yet")


def test_viewers_read_jobs_of_their_project_only(env: Env) -> None:
    alice, vic = env.token("alice"), env.token("vic", role="viewer")
    job = env.submit(alice).json()
    env.wait(job["id"], alice, final)
    listed = env.client.get(f"/api/v1/jobs?project_id={env.project_id}", headers=vic)
    assert [j["id"] for j in listed.json()] == [job["id"]]
    assert env.client.get(f"/api/v1/jobs/{job['id']}/result", headers=vic).status_code == 200
    assert env.client.post(f"/api/v1/jobs/{job['id']}/cancel",
                           headers=vic).status_code == 403
    with env.db.session() as session:
        stranger = mint_token(session, ensure_user(session, "stranger"))
    for path in (f"/api/v1/jobs/{job['id']}", f"/api/v1/jobs/{job['id']}/result",
                 f"/api/v1/jobs/{job['id']}/events"):
        r = env.client.get(path, headers={"Authorization": f"Bearer {stranger}"})
        assert r.status_code == 404, path


def test_a_stopped_api_hands_running_jobs_back_and_the_next_one_resumes(
        tmp_path: Path, cluster: Cluster) -> None:
    settings = Settings(data_dir=tmp_path / "data", register_demos=False)
    settings.data_dir.mkdir()
    db = Database(settings.resolved_database_url)
    db.create_all()
    with db.session() as session:
        user = ensure_user(session, "alice")
        project = ensure_project(session, "lab")
    first = make_service(settings, db, cluster)
    first.start()
    job, _ = first.submit(user, project.id, "accuracy", {"dataset_id": 1, "model_id": 1,
                                                         "pause_s": 0.2})
    _wait_row(db, job.id, lambda j: j.progress > 0)
    first.stop()
    with db.session() as session:
        paused = session.get(Job, job.id)
    assert paused.state == "queued" and paused.lease_owner is None and paused.attempts == 0
    second = make_service(settings, db, cluster)
    second.start()
    try:
        done = _wait_row(db, job.id, lambda j: j.state in ("succeeded", "failed"))
    finally:
        second.stop()
    assert done.state == "succeeded" and done.attempts == 1
    assert second.read_result(done) == {"n": N_INSTANCES, "accuracy": 0.75}
    db.dispose()


API_PROCESS = """
import sys, time
from backend.core.config import Settings
from backend.db import Database
from backend.services.cluster import Cluster
from tests.backend.test_jobs import make_service
settings = Settings(data_dir=sys.argv[1], dask_scheduler=sys.argv[2], register_demos=False)
db = Database(settings.resolved_database_url)
make_service(settings, db, Cluster(settings)).start()
time.sleep(600)
"""


def test_an_api_process_killed_mid_job_is_taken_over_after_its_lease(
        tmp_path: Path, cluster: Cluster) -> None:
    settings = Settings(data_dir=tmp_path / "data", register_demos=False)
    settings.data_dir.mkdir()
    db = Database(settings.resolved_database_url)
    db.create_all()
    with db.session() as session:
        user = ensure_user(session, "alice")
        project = ensure_project(session, "lab")
    address = cluster.client().scheduler.address
    # Submitted through a service that is never started: only the table holds the job.
    job, _ = make_service(settings, db, cluster).submit(
        user, project.id, "accuracy", {"dataset_id": 1, "model_id": 1, "pause_s": 0.2})
    proc = subprocess.Popen([sys.executable, "-c", API_PROCESS, str(settings.data_dir),
                             address], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        running = _wait_row(db, job.id, lambda j: j.progress > 0, timeout=90)
        assert running.state == "running" and running.lease_owner
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with db.session() as session:
        orphan = session.get(Job, job.id)
    assert orphan.state == "running"  # nobody told the table: only the lease can expire
    successor = make_service(settings, db, cluster, lease_s=1.0)
    successor.start()
    try:
        done = _wait_row(db, job.id, lambda j: j.state in ("succeeded", "failed"))
    finally:
        successor.stop()
    assert done.state == "succeeded" and done.attempts == 2
    assert done.progress == 1.0 and done.lease_owner is None
    assert successor.read_result(done) == {"n": N_INSTANCES, "accuracy": 0.75}
    db.dispose()


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    atomic_write_bytes(target, b'{"ok": 1}')

    with pytest.raises(TypeError):  # fails mid-write, after the temp file was created
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b'{"ok": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def _wait_row(db: Database, job_id: int, until, timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        with db.session() as session:
            job = session.get(Job, job_id)
        if until(job):
            return job
        assert time.monotonic() < deadline, f"timed out; last state {job.state} {job.message}"
        time.sleep(0.05)


# -- the real analyses agree with the estimators called directly ----------------------------


def test_analyses_match_their_estimators_called_on_the_whole_dataset(env: Env) -> None:
    from estimators.ablation import modality_importance, robustness_curve
    from estimators.emap import emap_gap
    from estimators.interaction_types import interaction_types

    alice = env.token("alice")
    requests = {"modality_importance": {}, "interaction_types": {}, "embedding": {},
                "robustness": {"kind": "mask", "levels": [0.0, 0.5, 1.0]},
                "emap": {"max_instances": 120}}
    jobs = {}
    for kind, params in requests.items():
        r = env.submit(alice, job=kind, **params)
        assert r.status_code == 201, r.text
        jobs[kind] = r.json()["id"]
    results = {}
    for kind, job_id in jobs.items():
        done = env.wait(job_id, alice, final, timeout=120)
        assert done["state"] == "succeeded", done
        results[kind] = env.client.get(f"/api/v1/jobs/{job_id}/result", headers=alice).json()

    model, data = cnn_text(), toy_dataset()
    names = model.spec.names
    importance = modality_importance(model, data)
    for n in names:
        assert results["modality_importance"]["mean"][n] == pytest.approx(
            importance[n]["mean"], abs=1e-5)
        assert results["modality_importance"]["mean_abs"][n] == pytest.approx(
            importance[n]["mean_abs"], abs=1e-5)

    with torch.no_grad():
        predicted = model(data.inputs).argmax(-1)
    types = interaction_types(model, data.inputs, target=predicted, output="softmax")
    assert results["interaction_types"]["counts"] == types.counts()
    assert results["interaction_types"]["instances"]["type"] == types.types
    assert sum(results["interaction_types"]["counts"].values()) == N_INSTANCES

    embedding = results["embedding"]
    assert len(embedding["x"]) == len(embedding["y"]) == N_INSTANCES
    assert embedding["type"] == types.types
    assert embedding["label"] == data.labels.tolist()
    assert 0 < sum(embedding["explained_variance"]) <= 1 + 1e-9

    curves = robustness_curve(model, data, kind="mask", levels=[0.0, 0.5, 1.0])
    assert results["robustness"]["clean"] == pytest.approx(curves.clean) == 0.75
    for n in names:
        assert results["robustness"]["accuracy"][n] == pytest.approx(
            curves.accuracy[n].tolist())

    gap = emap_gap(model, data.subset(torch.arange(120)))
    assert results["emap"]["accuracy"] == pytest.approx(gap.score)
    assert results["emap"]["emap_accuracy"] == pytest.approx(gap.emap_score)
    assert results["emap"]["gap"] == pytest.approx(gap.gap)


def test_pid_jobs_match_the_pid_estimators(env: Env) -> None:
    from estimators.pid import dataset_pid, model_pid

    alice = env.token("alice")
    options = {"n_boot": 0, "n_clusters": 4}
    assert env.submit(alice, job="data_pid", **options).status_code == 422  # no model in it
    data_job = env.submit(alice, job="data_pid", model_id=None, **options).json()
    model_job = env.submit(alice, job="model_pid", **options).json()
    results = {}
    for job in (data_job, model_job):
        done = env.wait(job["id"], alice, final, timeout=120)
        assert done["state"] == "succeeded", done
        results[job["kind"]] = env.client.get(f"/api/v1/jobs/{job['id']}/result",
                                              headers=alice).json()
    model, data = cnn_text(), toy_dataset()
    expected_data = dataset_pid(data, n_clusters=4)["image|text"]
    expected_model = model_pid(model, data, n_clusters=4)["image|text"]
    atoms = ("redundancy", "unique1", "unique2", "synergy", "total")
    for name in atoms:
        assert results["data_pid"]["pairs"]["image|text"][name] == pytest.approx(
            getattr(expected_data, name), abs=1e-9)
        assert results["model_pid"]["pairs"]["image|text"][name] == pytest.approx(
            getattr(expected_model, name), abs=1e-9)
        assert results["model_pid"]["data"]["image|text"][name] == pytest.approx(
            getattr(expected_data, name), abs=1e-9)
    assert results["model_pid"]["accuracy"] == 0.75


def test_jobs_on_postgres_dedupe_and_run_once_with_two_api_processes(
        postgres_url: str, tmp_path: Path, cluster: Cluster) -> None:
    """Two services (as two API replicas would) share one Postgres: concurrent identical
    submissions give one row, and exactly one service claims and runs it."""
    from sqlalchemy import create_engine, text

    name = f"jobs_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    settings = Settings(data_dir=tmp_path / "data", database_url=url, register_demos=False)
    db = Database(url)
    db.create_all()
    services = [make_service(settings, db, cluster) for _ in range(2)]
    try:
        with db.session() as session:
            users = [ensure_user(session, f"pg{i}") for i in range(4)]
            project = ensure_project(session, "lab")
        answers: list = [None] * 8

        def submit(i: int) -> None:
            answers[i] = services[i % 2].submit(users[i % 4], project.id, "accuracy",
                                                {"dataset_id": 1, "model_id": 1})

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({job.id for job, _ in answers}) == 1
        assert sum(created for _, created in answers) == 1
        for service in services:
            service.start()
        done = _wait_row(db, answers[0][0].id, lambda j: j.state in FINAL)
        assert done.state == "succeeded" and done.attempts == 1
        assert services[0].read_result(done) == {"n": N_INSTANCES, "accuracy": 0.75}
    finally:
        for service in services:
            service.stop()
        db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
def catalog_env(tmp_path: Path, cluster: Cluster) -> Iterator[Env]:
    """The app with its default sources (the catalog) on the module's cluster."""
    settings = Settings(data_dir=tmp_path / "data", register_demos=False)
    app = create_app(settings)
    app.state.jobs = JobService(settings, app.state.db, cluster=cluster, lease_s=5.0,
                                heartbeat_s=0.3, poll_s=0.05)
    with app.state.db.session() as session:
        project_id = ensure_project(session, "lab").id
    with TestClient(app) as client:
        yield Env(client, app.state.jobs, app.state.db, settings, project_id)
    app.state.db.dispose()


def test_jobs_on_catalog_models_rank_a_scenarios_models(catalog_env: Env) -> None:
    """The default sources: models and dataset registered in the catalog (here the
    synthetic-synergy demo), loaded by the workers from the database and data directory."""
    from backend.services.demos import register_demos
    from estimators.zoo.scenarios import get_scenario

    env, client = catalog_env, catalog_env.client
    scenario = get_scenario("synthetic-synergy")
    register_demos(env.settings, env.db, [scenario])
    with env.db.session() as session:
        admin = {"Authorization": "Bearer " + mint_token(
            session, ensure_user(session, "root", is_admin=True))}
        project_id = ensure_project(session, scenario.name).id
    models = client.get(f"/api/v1/models?project_id={project_id}", headers=admin).json()
    (dataset,) = client.get(f"/api/v1/datasets?project_id={project_id}", headers=admin).json()
    body = {"project_id": project_id, "kind": "model_selection",
            "params": {"dataset_id": dataset["id"], "model_ids": [m["id"] for m in models],
                       "n_clusters": 4}}
    job = client.post("/api/v1/jobs", json=body, headers=admin).json()
    done = env.wait(job["id"], admin, final, timeout=180)
    assert done["state"] == "succeeded", done
    result = client.get(f"/api/v1/jobs/{job['id']}/result", headers=admin).json()
    ranking = result["ranking"]
    assert sorted(r["model_id"] for r in ranking) == sorted(m["id"] for m in models)
    assert [r["distance"] for r in ranking] == sorted(r["distance"] for r in ranking)
    assert all(0 <= r["distance"] <= 1 for r in ranking)
    by_name = {m["name"]: m for m in models}
    for row in ranking:  # the chunked predictions are the registered models' own
        assert row["accuracy"] == pytest.approx(by_name[row["name"]]["accuracy"], abs=0.02)


def test_a_pt2_program_runs_in_a_sandbox_host_started_by_the_worker(catalog_env: Env) -> None:
    """Uploaded through the API, loaded on the worker through the catalog: the program is
    only ever opened by a sandbox host process (a child of the worker), and the job's
    predictions equal the eager model's."""
    from tests.backend.factories import (
        dataset_tensors,
        dataset_zip,
        exported_cnn_text,
        upload_dataset,
        upload_model,
    )

    env = catalog_env
    alice = env.token("alice")
    eager = cnn_text()
    model = upload_model(env.client, alice, env.project_id, name="exported", files={
        "program": ("m.pt2", exported_cnn_text()), "spec": ("s.json",
                                                           eager.spec.model_dump_json())})
    assert model.status_code == 201, model.text
    data = upload_dataset(env.client, alice, env.project_id, dataset_zip(n=40))
    assert data.status_code == 201, data.text
    job = env.submit(alice, job="model_pid", model_id=model.json()["id"],
                     dataset_id=data.json()["id"], n_boot=0, n_clusters=2).json()
    done = env.wait(job["id"], alice, final, timeout=180)
    assert done["state"] == "succeeded", done
    result = env.client.get(f"/api/v1/jobs/{job['id']}/result", headers=alice).json()
    t = dataset_tensors(40)
    with torch.no_grad():
        predicted = eager({"image": t["image"], "text": t["text"]}).argmax(-1)
    assert result["accuracy"] == pytest.approx(float((predicted == t["labels"]).float().mean()))
