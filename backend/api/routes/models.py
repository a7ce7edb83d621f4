"""Models: upload (.safetensors + config, or .pt2 + spec), list, get, delete, validate."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from backend.api.routes.common import IdPath, IdQuery, form_int, form_name, upload_body
from backend.core.security import CurrentUser, SessionDep, require_role
from backend.db import ModelRecord
from backend.schemas import ModelOut, ValidationReport
from backend.services import catalog
from backend.services.explain import Explainer
from backend.services.storage import Storage
from backend.services.uploads import MB, receive_form, refuse_model_file, sniff

router = APIRouter(prefix="/models", tags=["models"])

UPLOAD_DOC = upload_body({
    "project_id": {"type": "integer"},
    "name": {"type": "string", "maxLength": 128},
    "description": {"type": "string", "maxLength": 2000},
    "weights": {"type": "string", "format": "binary",
                "description": ".safetensors state dict (with 'config')"},
    "config": {"type": "string", "format": "binary",
               "description": "JSON {architecture, params, spec} (with 'weights')"},
    "program": {"type": "string", "format": "binary",
                "description": "torch.export program .pt2 (with 'spec')"},
    "spec": {"type": "string", "format": "binary", "description": "ModelSpec JSON"},
}, required=["project_id", "name"])


@router.get("", response_model=list[ModelOut])
def list_models(user: CurrentUser, session: SessionDep,
                project_id: IdQuery = None) -> list[ModelOut]:
    """Models in the caller's projects (or in one project)."""
    return [catalog.model_out(r) for r in catalog.visible_rows(session, user, ModelRecord,
                                                               project_id)]


@router.post("", response_model=ModelOut, status_code=status.HTTP_201_CREATED,
             openapi_extra=UPLOAD_DOC,
             responses={413: {"description": "upload too large"},
                        415: {"description": "not an accepted model format"}})
async def upload_model(request: Request, user: CurrentUser, session: SessionDep) -> ModelOut:
    """Upload a model: ``weights`` (.safetensors) + ``config`` (JSON naming a registered
    architecture), or ``program`` (.pt2) + ``spec`` (ModelSpec JSON). Pickles, TorchScript
    and ONNX are refused with a message on how to export. The body is streamed to a temp
    file under a hard size limit; nothing is kept unless the upload is valid."""
    settings = request.app.state.settings
    with Storage(settings.data_dir).scratch() as scratch:
        form = await receive_form(
            request, scratch, limit_bytes=settings.max_upload_mb * MB,
            file_fields={"weights", "config", "program", "spec"},
            text_fields={"project_id", "name", "description", "config", "spec"})
        project_id = form_int(form, "project_id")
        require_role(user, project_id, "editor")
        name = form_name(form)
        description = form.fields.get("description", "")[:2000]
        if "weights" in form.files and "program" not in form.files:
            weights = form.files["weights"]
            kind = await run_in_threadpool(sniff, weights.path)
            if kind != "safetensors":
                raise refuse_model_file(kind, "weights", "a .safetensors file")
            config_text = form.text("config")
            if config_text is None:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                    "'weights' needs a 'config' JSON {architecture, params, "
                                    "spec} naming a registered architecture")
            config = catalog.parse_model_config(config_text)
            row = await run_in_threadpool(
                catalog.register_safetensors_model, settings, session,
                project_id=project_id, name=name, weights=weights.path,
                weights_sha256=weights.sha256, config=config, description=description)
        elif "program" in form.files and "weights" not in form.files:
            program = form.files["program"]
            kind = await run_in_threadpool(sniff, program.path)
            if kind != "pt2":
                raise refuse_model_file(kind, "program", "a torch.export program (.pt2)")
            spec_text = form.text("spec")
            if spec_text is None:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                    "'program' needs a 'spec' (ModelSpec JSON)")
            spec = catalog.parse_spec(spec_text)
            row = await run_in_threadpool(
                catalog.register_program, settings, session, project_id=project_id,
                name=name, program=program.path, program_sha256=program.sha256, spec=spec,
                description=description)
        else:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                "send either 'weights' (.safetensors) + 'config', or "
                                "'program' (.pt2) + 'spec'")
    return catalog.model_out(row)


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: IdPath, user: CurrentUser, session: SessionDep) -> ModelOut:
    return catalog.model_out(catalog.model_row(session, user, model_id))


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(model_id: IdPath, request: Request, user: CurrentUser,
                 session: SessionDep) -> None:
    """Delete a model (editors); its file goes when no other row uses it."""
    row = catalog.model_row(session, user, model_id, "editor")
    sha = row.sha256
    session.delete(row)
    session.commit()
    if not catalog.blob_in_use(session, sha):
        Storage(request.app.state.settings.data_dir).remove(sha)


@router.post("/{model_id}/validate", response_model=ValidationReport)
def validate_model(model_id: IdPath, request: Request, user: CurrentUser, session: SessionDep,
                   dataset_id: IdQuery = None) -> ValidationReport:
    """Dry-run the model twice on a few dataset rows (or random inputs of its spec's
    shapes): shape/dtype errors explained, non-determinism flagged."""
    settings = request.app.state.settings
    row = catalog.model_row(session, user, model_id)
    explainer = Explainer(settings, getattr(request.app.state, "sandbox", None))
    model = explainer.model(row)
    batch = None
    if dataset_id is not None:
        dataset = catalog.dataset_from_row(settings,
                                           catalog.dataset_row(session, user, dataset_id))
        try:
            catalog.check_compatible(model.spec, dataset)
        except HTTPException as exc:
            return ValidationReport(ok=False, deterministic=None, errors=[exc.detail],
                                    warnings=[])
        rows = dataset.subset(list(range(min(4, len(dataset)))))
        batch = catalog.model_inputs(model.spec, rows.inputs)
    with catalog.model_lock(row):
        errors, warnings, deterministic = catalog.dry_run(model, batch)
    return ValidationReport(ok=not errors, deterministic=deterministic, errors=errors,
                            warnings=warnings)
