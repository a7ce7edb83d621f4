"""The UI's only way to the backend: a thin HTTP client for the ``/api/v1`` API.

Inside a Dash callback or a page layout, ``client()`` builds a client for the signed-in user
from the session cookie; the token never appears in a URL.
"""

from __future__ import annotations

from typing import Any

import flask
import httpx

SESSION_COOKIE = "crosslens_session"


class ApiError(Exception):
    """The API answered with an error, or could not be reached; ``str()`` is for the user."""

    def __init__(self, status: int | None, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if self.status is None:
            return f"The crosslens API cannot be reached ({self.detail}). Is it running?"
        detail = self.detail
        if isinstance(detail, list):  # FastAPI validation errors
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d)
                               for d in detail)
        return f"{detail} (HTTP {self.status})"


class ApiClient:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                  timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(None, type(exc).__name__) from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text[:300]
            raise ApiError(response.status_code, detail)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        self._http.close()

    # -- resources --------------------------------------------------------------------------

    def health(self) -> dict:
        return self.get("/health")

    def me(self) -> dict:
        return self.get("/api/v1/auth/me")


def api_url() -> str:
    return flask.current_app.config["CROSSLENS_API_URL"]


def client(token: str | None = None) -> ApiClient:
    """A client for the signed-in user of the current request (or for ``token``)."""
    if token is None:
        token = flask.request.cookies.get(SESSION_COOKIE)
    return ApiClient(api_url(), token)
