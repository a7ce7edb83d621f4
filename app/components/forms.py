"""Form helpers: read what ``dcc.Upload`` hands over, and show API errors by the right field."""

from __future__ import annotations

import base64
import binascii
import re

from app.api_client import ApiError


def decode_upload(contents: str | None) -> bytes | None:
    """The bytes of a ``dcc.Upload`` data URL, or None if there is none or it is garbled."""
    if not contents or "," not in contents:
        return None
    try:
        return base64.b64decode(contents.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        return None


def field_errors(error: ApiError, fields: dict[str, str]) -> dict[str, str]:
    """Place an API error next to the form field it is about.

    ``fields`` maps the API's field names (``weights``, ``config``, ``file``, ``name``...) to
    form slots. FastAPI validation errors carry the field in ``loc``; plain messages are
    matched on the field name they mention; anything else goes to the ``form`` slot.
    """
    placed: dict[str, list[str]] = {}
    details = error.detail if isinstance(error.detail, list) else [error.detail]
    for detail in details:
        if isinstance(detail, dict):
            loc = [str(part) for part in detail.get("loc", [])]
            text = str(detail.get("msg", detail))
            slot = next((fields[p] for p in reversed(loc) if p in fields), "form")
            placed.setdefault(slot, []).append(f"{loc[-1] if loc else 'field'}: {text}")
            continue
        text = str(detail)
        mentions = [(match.start(), slot) for field, slot in fields.items()
                    if (match := re.search(rf"\b{re.escape(field)}\b", text, re.IGNORECASE))]
        slot = min(mentions)[1] if mentions else "form"
        if error.status == 413:
            slot = next(iter(s for f, s in fields.items() if f in ("weights", "program", "file")),
                        slot)
        placed.setdefault(slot, []).append(text)
    if error.status is None:
        return {"form": error.message}
    return {slot: "; ".join(texts) + f" (HTTP {error.status})" for slot, texts in placed.items()}
