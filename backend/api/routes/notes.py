"""Notes on instances: project members read them, editors write them."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select

from backend.api.routes.common import IdQuery
from backend.core.security import CurrentUser, SessionDep, require_role
from backend.db import Note
from backend.schemas import NoteCreate, NoteOut
from backend.services import catalog

router = APIRouter(prefix="/notes", tags=["notes"])


def _out(note: Note) -> NoteOut:
    return NoteOut(id=note.id, project_id=note.project_id, model_id=note.model_id,
                   dataset_id=note.dataset_id, index=note.index, author=note.author.name,
                   text=note.text, created_at=note.created_at)


@router.get("", response_model=list[NoteOut])
def list_notes(user: CurrentUser, session: SessionDep,
               project_id: IdQuery = None, model_id: IdQuery = None,
               dataset_id: IdQuery = None,
               index: IdQuery = None) -> list[NoteOut]:
    """Notes the caller can see, newest first, filtered by any of the query fields."""
    query = select(Note).order_by(Note.created_at.desc(), Note.id.desc())
    if project_id is not None:
        require_role(user, project_id, "viewer")
        query = query.where(Note.project_id == project_id)
    elif not user.is_admin:
        query = query.where(Note.project_id.in_([m.project_id for m in user.memberships]))
    if model_id is not None:
        query = query.where(Note.model_id == model_id)
    if dataset_id is not None:
        query = query.where(Note.dataset_id == dataset_id)
    if index is not None:
        query = query.where(Note.index == index)
    return [_out(n) for n in session.scalars(query.limit(1000))]


@router.post("", response_model=NoteOut, status_code=status.HTTP_201_CREATED)
def create_note(body: NoteCreate, user: CurrentUser, session: SessionDep) -> NoteOut:
    """Attach a note to an instance (editors and admins of the project)."""
    require_role(user, body.project_id, "editor")
    dataset = catalog.dataset_row(session, user, body.dataset_id)
    if dataset.project_id != body.project_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"dataset {body.dataset_id} is not in project {body.project_id}")
    if body.index >= dataset.n:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"index {body.index} is outside dataset {dataset.id} "
                            f"(rows 0..{dataset.n - 1})")
    if body.model_id is not None:
        model = catalog.model_row(session, user, body.model_id)
        if model.project_id != body.project_id:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"model {body.model_id} is not in project {body.project_id}")
    note = Note(project_id=body.project_id, model_id=body.model_id,
                dataset_id=body.dataset_id, index=body.index, author_id=user.id,
                text=body.text)
    session.add(note)
    session.flush()
    session.refresh(note)
    return _out(note)
