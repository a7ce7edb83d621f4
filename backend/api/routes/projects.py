"""Projects group models, datasets and notes; a user sees only the projects it is in."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select

from backend.api.routes.common import IdPath
from backend.core.security import CurrentUser, SessionDep, grant, require_role, role_in
from backend.db import Project, User
from backend.schemas import MemberAdd, MemberOut, ProjectCreate, ProjectOut

router = APIRouter(prefix="/projects", tags=["projects"])


def _out(project: Project, user: User) -> ProjectOut:
    return ProjectOut(id=project.id, name=project.name, description=project.description,
                      role=role_in(user, project.id) or "viewer")


@router.get("", response_model=list[ProjectOut])
def list_projects(user: CurrentUser, session: SessionDep) -> list[ProjectOut]:
    """The projects the caller can see (every project for a global admin)."""
    query = select(Project).order_by(Project.id)
    if not user.is_admin:
        query = query.where(Project.id.in_([m.project_id for m in user.memberships]))
    return [_out(p, user) for p in session.scalars(query)]


@router.post("", response_model=ProjectOut, status_code=status.HTTP_201_CREATED,
             responses={409: {"description": "a project with this name exists"}})
def create_project(body: ProjectCreate, user: CurrentUser, session: SessionDep) -> ProjectOut:
    """Create a project; the caller becomes its admin."""
    if session.scalar(select(Project.id).where(Project.name == body.name)) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"a project named {body.name!r} exists; choose another name")
    project = Project(name=body.name, description=body.description)
    session.add(project)
    session.flush()
    grant(session, user, project, "admin")
    session.refresh(user)
    return _out(project, user)


@router.get("/{project_id}", response_model=ProjectOut)
def get_project(project_id: IdPath, user: CurrentUser, session: SessionDep) -> ProjectOut:
    require_role(user, project_id, "viewer")
    project = session.get(Project, project_id)
    if project is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"project {project_id} not found")
    return _out(project, user)


@router.get("/{project_id}/members", response_model=list[MemberOut])
def list_members(project_id: IdPath, user: CurrentUser, session: SessionDep) -> list[MemberOut]:
    require_role(user, project_id, "viewer")
    project = session.get(Project, project_id)
    if project is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"project {project_id} not found")
    return [MemberOut(project_id=project_id, user=m.user.name, role=m.role)
            for m in sorted(project.memberships, key=lambda m: m.user.name)]


@router.post("/{project_id}/members", response_model=MemberOut)
def add_member(project_id: IdPath, body: MemberAdd, user: CurrentUser,
               session: SessionDep) -> MemberOut:
    """Give a user a role in the project (project admins only); sets the role if the user
    is already a member."""
    require_role(user, project_id, "admin")
    project = session.get(Project, project_id)
    if project is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"project {project_id} not found")
    member = session.scalar(select(User).where(User.name == body.user))
    if member is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no user named {body.user!r}; create it with "
                            f"'crosslens users add {body.user}'")
    grant(session, member, project, body.role)
    return MemberOut(project_id=project_id, user=member.name, role=body.role)
