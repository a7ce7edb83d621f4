"""Tokens, users and roles; the deny-by-default dependency every API route goes through.

Tokens are 256-bit random strings shown once; only their SHA-256 is stored (a slow password
hash buys nothing for tokens with that much entropy). A request is authenticated by
``Authorization: Bearer <token>``; the v1 router depends on ``current_user`` as a whole, so
a route added there is protected without remembering to ask for it.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db import ROLES, ApiToken, Membership, Project, User, utcnow

TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mint_token(session: Session, user: User, label: str = "") -> str:
    """Create a token for ``user`` and return it in clear (the only time it is visible)."""
    token = new_token()
    session.add(ApiToken(user=user, token_hash=hash_token(token), label=label))
    session.flush()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    if not token or len(token) > 256:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token),
                                                ApiToken.revoked_at.is_(None)))
    return row.user if row else None


def revoke_user_tokens(session: Session, user: User) -> int:
    n = 0
    for tok in user.tokens:
        if tok.revoked_at is None:
            tok.revoked_at = utcnow()
            n += 1
    return n


def ensure_user(session: Session, name: str, *, is_admin: bool = False) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, is_admin=is_admin)
        session.add(user)
        session.flush()
    elif is_admin and not user.is_admin:
        user.is_admin = True
    return user


def ensure_project(session: Session, name: str, description: str = "") -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name, description=description)
        session.add(project)
        session.flush()
    return project


def grant(session: Session, user: User, project: Project, role: str) -> Membership:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    member = session.scalar(select(Membership).where(Membership.user_id == user.id,
                                                     Membership.project_id == project.id))
    if member is None:
        member = Membership(user=user, project=project, role=role)
        session.add(member)
    else:
        member.role = role
    session.flush()
    return member


def role_in(user: User, project_id: int) -> str | None:
    """The user's role in a project (global admins are admins everywhere), or None."""
    if user.is_admin:
        return "admin"
    for m in user.memberships:
        if m.project_id == project_id:
            return m.role
    return None


def has_role(user: User, project_id: int, minimum: str) -> bool:
    role = role_in(user, project_id)
    return role is not None and ROLES.index(role) >= ROLES.index(minimum)


# -- FastAPI dependencies -------------------------------------------------------------------


def get_session(request: Request):
    with request.app.state.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

_UNAUTHORIZED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="missing or invalid token: send 'Authorization: Bearer <token>' "
           "(tokens come from the login link printed by 'crosslens serve' or "
           "'crosslens users add')",
    headers={"WWW-Authenticate": "Bearer"},
)


def current_user(request: Request, session: SessionDep) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _UNAUTHORIZED
    user = user_for_token(session, token.strip())
    if user is None:
        raise _UNAUTHORIZED
    request.state.user_id = user.id
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require_role(user: User, project_id: int, minimum: str) -> None:
    """404 when the user cannot see the project at all (no existence leak), 403 when the role
    is too low."""
    role = role_in(user, project_id)
    if role is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"project {project_id} not found")
    if ROLES.index(role) < ROLES.index(minimum):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail=f"this needs the {minimum} role in project {project_id}; "
                                   f"you are {role}")
