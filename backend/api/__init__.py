"""HTTP API: ``/health`` outside, everything else under ``/api/v1`` behind a token."""

from fastapi import APIRouter, Depends

from backend.api.routes import (  # backend core: datasets, explain, models, notes, projects
    auth,
    datasets,
    explain,
    models,
    notes,
    projects,
)
from backend.api.routes import jobs as jobs_routes  # jobs
from backend.core.security import current_user


def build_v1_router() -> APIRouter:
    """Every router included here inherits the ``current_user`` dependency: deny by default."""
    v1 = APIRouter(prefix="/api/v1", dependencies=[Depends(current_user)])
    v1.include_router(auth.router)
    for core in (projects, models, datasets, explain, notes):  # backend core
        v1.include_router(core.router)
    v1.include_router(jobs_routes.router)  # jobs
    return v1
