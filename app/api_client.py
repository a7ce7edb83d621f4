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
        if response.status_code == 204 or not response.content:
            return None  # e.g. DELETE: 204 No Content, whatever its content-type says
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

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- resources --------------------------------------------------------------------------

    def health(self) -> dict:
        return self.get("/health")

    def me(self) -> dict:
        return self.get("/api/v1/auth/me")

    # projects and notes
    def projects(self) -> list[dict]:
        return self.get("/api/v1/projects")

    def create_project(self, name: str, description: str = "") -> dict:
        return self.post("/api/v1/projects", json={"name": name, "description": description})

    def notes(self, project_id: int, dataset_id: int, index: int,
              model_id: int | None = None) -> list[dict]:
        params = {"project_id": project_id, "dataset_id": dataset_id, "index": index}
        if model_id is not None:
            params["model_id"] = model_id
        return self.get("/api/v1/notes", params=params)

    def add_note(self, project_id: int, dataset_id: int, index: int, text: str,
                 model_id: int | None = None) -> dict:
        return self.post("/api/v1/notes", json={
            "project_id": project_id, "model_id": model_id, "dataset_id": dataset_id,
            "index": index, "text": text})

    # models and datasets
    def models(self, project_id: int) -> list[dict]:
        return self.get("/api/v1/models", params={"project_id": project_id})

    def model(self, model_id: int) -> dict:
        return self.get(f"/api/v1/models/{model_id}")

    def upload_model(self, project_id: int, name: str,
                     files: dict[str, tuple[str, bytes]]) -> dict:
        """``files``: ``weights`` + ``config`` (safetensors) or ``program`` + ``spec`` (.pt2),
        each ``(filename, content)``."""
        return self.post("/api/v1/models", data={"project_id": str(project_id), "name": name},
                         files={k: (fn, content) for k, (fn, content) in files.items()})

    def delete_model(self, model_id: int) -> None:
        self.delete(f"/api/v1/models/{model_id}")

    def datasets(self, project_id: int) -> list[dict]:
        return self.get("/api/v1/datasets", params={"project_id": project_id})

    def dataset(self, dataset_id: int) -> dict:
        return self.get(f"/api/v1/datasets/{dataset_id}")

    def upload_dataset(self, project_id: int, filename: str, content: bytes) -> dict:
        return self.post("/api/v1/datasets", data={"project_id": str(project_id)},
                         files={"file": (filename, content, "application/zip")})

    def delete_dataset(self, dataset_id: int) -> None:
        self.delete(f"/api/v1/datasets/{dataset_id}")

    def instances(self, dataset_id: int, *, offset: int = 0, limit: int = 50,
                  label: int | None = None, model_id: int | None = None) -> dict:
        params: dict[str, int] = {"offset": offset, "limit": limit}
        if label is not None:
            params["label"] = label
        if model_id is not None:
            params["model_id"] = model_id
        return self.get(f"/api/v1/datasets/{dataset_id}/instances", params=params)

    def instance(self, dataset_id: int, index: int, model_id: int | None = None) -> dict:
        params = {"model_id": model_id} if model_id is not None else {}
        return self.get(f"/api/v1/datasets/{dataset_id}/instances/{index}", params=params)

    # instance explanations: ``request`` holds model_id, dataset_id, index, target, output
    def explain(self, what: str, request: dict[str, Any]) -> dict:
        """``what`` is predict | attributions | interactions | attention | whatif."""
        return self.post(f"/api/v1/explain/{what}", json=request)

    # dataset-level analyses as jobs
    def submit_job(self, project_id: int, kind: str, params: dict[str, Any]) -> dict:
        """Queue an analysis; an identical earlier request returns that job instead."""
        return self.post("/api/v1/jobs", json={"project_id": project_id, "kind": kind,
                                               "params": params})

    def jobs(self, project_id: int, limit: int = 200) -> list[dict]:
        """The project's jobs, newest first."""
        return self.get("/api/v1/jobs", params={"project_id": project_id, "limit": limit})

    def job(self, job_id: int) -> dict:
        return self.get(f"/api/v1/jobs/{job_id}")

    def cancel_job(self, job_id: int) -> dict:
        return self.post(f"/api/v1/jobs/{job_id}/cancel")

    def job_result(self, job_id: int) -> dict:
        return self.get(f"/api/v1/jobs/{job_id}/result")


def api_url() -> str:
    return flask.current_app.config["CROSSLENS_API_URL"]


def client(token: str | None = None) -> ApiClient:
    """A client for the signed-in user of the current request (or for ``token``)."""
    if token is None:
        token = flask.request.cookies.get(SESSION_COOKIE)
    return ApiClient(api_url(), token)
