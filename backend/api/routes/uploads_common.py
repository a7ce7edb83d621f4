"""Helpers shared by the upload routes: form field parsing and OpenAPI body docs."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status

from backend.services.uploads import ReceivedForm


def upload_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a streamed multipart upload (parsed by hand, so FastAPI
    cannot infer it)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}}


def form_int(form: ReceivedForm, name: str) -> int:
    value = form.fields.get(name)
    if value is None or not value.strip().isdigit() or len(value.strip()) > 12:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"form field {name!r} must be a non-negative integer")
    return int(value)


def form_name(form: ReceivedForm, *, default: str | None = None) -> str:
    name = form.fields.get("name", default or "").strip()
    if not 1 <= len(name) <= 128:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "form field 'name' must be 1 to 128 characters")
    return name
