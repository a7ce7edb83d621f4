"""Helpers shared by the backend-core routes: bounded id parameters, form field parsing and
OpenAPI docs for the streamed uploads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Path, Query, status

from backend.schemas import MAX_ID
from backend.services.uploads import ReceivedForm

# Ids and row indices fit a 32-bit signed integer (Postgres INTEGER); larger numbers are a
# 422 from validation instead of an overflow in the database driver.
IdPath = Annotated[int, Path(ge=0, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=0, le=MAX_ID)]


def upload_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a streamed multipart upload (parsed by hand, so FastAPI
    cannot infer it)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}}


def form_int(form: ReceivedForm, name: str) -> int:
    value = form.fields.get(name)
    if value is None or not value.strip().isdigit() or int(value) > MAX_ID:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"form field {name!r} must be an integer id (0..{MAX_ID})")
    return int(value)


def form_name(form: ReceivedForm, *, default: str | None = None) -> str:
    name = form.fields.get("name", default or "").strip()
    if not 1 <= len(name) <= 128:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "form field 'name' must be 1 to 128 characters")
    return name
