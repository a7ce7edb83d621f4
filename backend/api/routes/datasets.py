"""Datasets: upload a .zip (manifest + tensors), list, get, delete, browse instances."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request, status
from starlette.concurrency import run_in_threadpool

from backend.api.routes.common import IdPath, IdQuery, form_int, upload_body
from backend.core.security import CurrentUser, SessionDep, require_role
from backend.db import DatasetRecord
from backend.schemas import MAX_ID, DatasetOut, InstancePage, InstanceView
from backend.services import catalog
from backend.services.explain import Explainer
from backend.services.storage import Storage
from backend.services.uploads import MB, receive_form, sniff

router = APIRouter(prefix="/datasets", tags=["datasets"])

UPLOAD_DOC = upload_body({
    "project_id": {"type": "integer"},
    "name": {"type": "string", "maxLength": 128},
    "description": {"type": "string", "maxLength": 2000},
    "file": {"type": "string", "format": "binary",
             "description": ".zip with manifest.json (README, 'Upload formats')"},
}, required=["project_id", "file"])


@router.get("", response_model=list[DatasetOut])
def list_datasets(user: CurrentUser, session: SessionDep,
                  project_id: IdQuery = None) -> list[DatasetOut]:
    return [catalog.dataset_out(r) for r in catalog.visible_rows(session, user, DatasetRecord,
                                                                 project_id)]


@router.post("", response_model=DatasetOut, status_code=status.HTTP_201_CREATED,
             openapi_extra=UPLOAD_DOC,
             responses={413: {"description": "upload or unpacked size too large"},
                        415: {"description": "not a zip"}})
async def upload_dataset(request: Request, user: CurrentUser,
                         session: SessionDep) -> DatasetOut:
    """Upload a dataset zip. Zip slip, links, bombs (any compression), wrong lengths and
    dtypes are refused; nothing is kept unless the whole dataset is valid."""
    settings = request.app.state.settings
    with Storage(settings.data_dir).scratch() as scratch:
        form = await receive_form(request, scratch, limit_bytes=settings.max_upload_mb * MB,
                                  file_fields={"file"},
                                  text_fields={"project_id", "name", "description"})
        project_id = form_int(form, "project_id")
        require_role(user, project_id, "editor")
        if "file" not in form.files:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                "send the dataset .zip as form field 'file'")
        archive = form.files["file"]
        kind = await run_in_threadpool(sniff, archive.path)
        if kind not in ("dataset_zip", "zip"):
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                                "a dataset must be a .zip with manifest.json at its root and "
                                "one .safetensors or .npy per modality (README, 'Upload "
                                "formats')")
        name = form.fields.get("name", "").strip()[:128]
        row = await run_in_threadpool(
            catalog.register_dataset, settings, session, project_id=project_id, name=name,
            archive=archive.path, archive_sha256=archive.sha256, scratch=scratch,
            description=form.fields.get("description", "")[:2000])
    return catalog.dataset_out(row)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: IdPath, user: CurrentUser, session: SessionDep) -> DatasetOut:
    return catalog.dataset_out(catalog.dataset_row(session, user, dataset_id))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: IdPath, request: Request, user: CurrentUser,
                   session: SessionDep) -> None:
    """Delete a dataset (editors); its files go when no other row uses them."""
    row = catalog.dataset_row(session, user, dataset_id, "editor")
    shas = (row.sha256, row.tensors_sha256)
    session.delete(row)
    session.commit()
    storage = Storage(request.app.state.settings.data_dir)
    for sha in shas:
        if not catalog.blob_in_use(session, sha):
            storage.remove(sha)


@router.get("/{dataset_id}/instances", response_model=InstancePage)
def list_instances(dataset_id: IdPath, request: Request, user: CurrentUser, session: SessionDep,
                   offset: int = Query(default=0, ge=0, le=MAX_ID),
                   limit: int = Query(default=50, ge=1, le=500),
                   label: IdQuery = None, model_id: IdQuery = None) -> InstancePage:
    """A page of rows; with ``model_id`` each row also gets the model's prediction."""
    return Explainer(request.app.state.settings,
                     getattr(request.app.state, "sandbox", None)).instance_page(
        session, user, dataset_id, offset=offset, limit=limit, label=label, model_id=model_id)


@router.get("/{dataset_id}/instances/{index}", response_model=InstanceView)
def get_instance(dataset_id: IdPath, index: IdPath, request: Request, user: CurrentUser,
                 session: SessionDep, model_id: IdQuery = None) -> InstanceView:
    """One row ready to draw; ``model_id`` supplies the vocabulary and display settings."""
    return Explainer(request.app.state.settings).instance_view(session, user, dataset_id,
                                                               index, model_id)
