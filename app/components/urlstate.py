"""Page state in the URL query string, so a copied link reproduces the view exactly.

Pages build their query with ``query_string`` in a callback and hand it to a one-line
clientside callback that calls ``history.replaceState``: the address bar changes without a
navigation, so the page is not re-rendered, and reloading the link runs the page's
``layout(**query)`` with the same values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

PREDICTED = "predicted"  # the target value meaning "explain the predicted class"

# Writes the query (a "?a=1&b=2" string) into the address bar without navigating.
REPLACE_STATE_JS = """function(query) {
    if (typeof query === "string" && query !== window.location.search) {
        window.history.replaceState(window.history.state, "", window.location.pathname + query);
    }
    return query;
}"""


def query_string(state: Mapping[str, Any]) -> str:
    """``?k=v&...`` of the set values (None and "" dropped); lists become ``a-b``."""
    items: dict[str, str] = {}
    for key, value in state.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, list | tuple):
            value = "-".join(str(v) for v in value)
        items[key] = str(value)
    return "?" + urlencode(items) if items else ""


def as_int(value: Any, default: int | None = None) -> int | None:
    """A query value as an int, or ``default`` if it is missing or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def as_pair(value: Any) -> list[int] | None:
    """``"3-5"`` → ``[3, 5]``; anything else → None."""
    if isinstance(value, list | tuple) and len(value) == 2:
        parts = value
    elif isinstance(value, str) and value.count("-") == 1:
        parts = value.split("-")
    else:
        return None
    first, second = as_int(parts[0]), as_int(parts[1])
    return None if first is None or second is None else [first, second]


def pick(value: Any, allowed: list, default: Any = None) -> Any:
    """``value`` if it is one of ``allowed``, else ``default`` (or the first allowed)."""
    if value in allowed:
        return value
    if default is not None:
        return default
    return allowed[0] if allowed else None


def explain_request(state: dict) -> dict:
    """The common fields of every ``/explain/*`` request from the page state."""
    target = state.get("target")
    return {"model_id": state["model"], "dataset_id": state["dataset"],
            "index": state["instance"], "output": state.get("output") or "logits",
            "target": None if target in (None, PREDICTED) else int(target)}
