"""Who am I: the UI validates a login token here before it sets its session cookie."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from backend.core.security import CurrentUser, role_in

router = APIRouter(prefix="/auth", tags=["auth"])


class ProjectRole(BaseModel):
    id: int
    name: str
    role: str


class Me(BaseModel):
    id: int
    name: str
    is_admin: bool
    projects: list[ProjectRole]


@router.get("/me", response_model=Me)
def me(user: CurrentUser) -> Me:
    """The token's user and the projects it can see, with its role in each."""
    projects = [ProjectRole(id=m.project.id, name=m.project.name, role=role_in(user, m.project_id)
                            or m.role) for m in user.memberships]
    return Me(id=user.id, name=user.name, is_admin=user.is_admin, projects=projects)
