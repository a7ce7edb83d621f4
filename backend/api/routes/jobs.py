"""``/jobs``: submit dataset-level analyses, follow their progress, cancel, fetch results.

Reading needs a role in the job's project (404 otherwise: no existence leak); submitting and
cancelling need editor. ``GET /jobs/{id}/events`` streams ``JobOut`` as server-sent events
until the job reaches a final state, for a progress bar without polling code.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from backend.core.security import CurrentUser, SessionDep, has_role, require_role
from backend.db import Job
from backend.services.jobs import FINAL_STATES, JobRequestError, JobService

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
EVENT_POLL_S = 0.3
EVENT_MAX_S = 3600.0


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: int
    kind: str = Field(min_length=1, max_length=32, description=(
        "data_pid, model_pid, emap, interaction_types, modality_importance, robustness, "
        "model_selection or embedding"))
    params: dict[str, Any] = Field(default_factory=dict, description=(
        "dataset_id and model_id (or model_ids for model_selection), plus the kind's options"))


class JobOut(BaseModel):
    id: int
    project_id: int
    owner: str
    kind: str
    params: dict[str, Any]
    state: JobState
    progress: float = Field(ge=0.0, le=1.0)
    message: str
    attempts: int
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


def job_out(job: Job) -> JobOut:
    return JobOut(id=job.id, project_id=job.project_id, owner=job.owner.name, kind=job.kind,
                  params=job.params, state=job.state, progress=job.progress,
                  message=job.message, attempts=job.attempts, error=job.error,
                  created_at=job.created_at, started_at=job.started_at,
                  finished_at=job.finished_at)


def _service(request: Request) -> JobService:
    return request.app.state.jobs


def _visible_job(session, user, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or not has_role(user, job.project_id, "viewer"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")
    return job


@router.post("", response_model=JobOut, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": JobOut, "description": "an identical job exists"}})
def submit_job(body: JobCreate, request: Request, response: Response, user: CurrentUser,
               session: SessionDep) -> JobOut:
    """Queue an analysis; an identical request returns the existing job (200) instead."""
    require_role(user, body.project_id, "editor")
    try:
        job, created = _service(request).submit(user, body.project_id, body.kind, body.params)
    except JobRequestError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return job_out(job)


@router.get("", response_model=list[JobOut])
def list_jobs(user: CurrentUser, session: SessionDep,
              project_id: int = Query(description="the project whose jobs to list"),
              limit: int = Query(default=100, ge=1, le=1000)) -> list[JobOut]:
    """The project's jobs, newest first."""
    require_role(user, project_id, "viewer")
    jobs = session.scalars(select(Job).where(Job.project_id == project_id)
                           .order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)).all()
    return [job_out(j) for j in jobs]


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: int, user: CurrentUser, session: SessionDep) -> JobOut:
    return job_out(_visible_job(session, user, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: int, request: Request, user: CurrentUser,
               session: SessionDep) -> JobOut:
    """Cancel a queued or running job (a finished job is returned unchanged)."""
    job = _visible_job(session, user, job_id)
    if job.owner_id != user.id:
        require_role(user, job.project_id, "editor")
    return job_out(_service(request).cancel(job_id, by=user.name))


@router.get("/{job_id}/result")
def job_result(job_id: int, request: Request, user: CurrentUser,
               session: SessionDep) -> dict[str, Any]:
    """The analysis result as JSON; 409 until the job has succeeded."""
    job = _visible_job(session, user, job_id)
    if job.state != "succeeded":
        reason = f": {job.error}" if job.error else ""
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"job {job_id} is {job.state}{reason}; the result exists "
                                   "once it has succeeded")
    try:
        return _service(request).read_result(job)
    except FileNotFoundError as exc:
        raise HTTPException(status.HTTP_410_GONE,
                            detail=f"{exc}; submit the same request again") from None


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def job_events(job_id: int, request: Request, user: CurrentUser,
               session: SessionDep) -> StreamingResponse:
    """Server-sent events: one ``data: <JobOut JSON>`` per change, until a final state."""
    _visible_job(session, user, job_id)
    db = request.app.state.db

    def stream() -> Iterator[str]:
        last = None
        deadline = time.monotonic() + EVENT_MAX_S
        while time.monotonic() < deadline:
            with db.session() as s:
                job = s.get(Job, job_id)
                if job is None:
                    return
                out = job_out(job).model_dump_json()
                state = job.state
            if out != last:
                last = out
                yield f"event: job\ndata: {out}\n\n"
            if state in FINAL_STATES:
                return
            time.sleep(EVENT_POLL_S)
        yield f"event: timeout\ndata: {json.dumps({'id': job_id})}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
