"""The API factory, health, and deny-by-default on every route."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI before included-router contexts
    iter_route_contexts = None
from fastapi.testclient import TestClient

from tests.backend.conftest import make_token

PUBLIC = {("GET", "/health")}


def test_health_answers_without_a_token(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, included routers flattened (FastAPI >= 0.16x
    nests them; older versions list APIRoutes directly)."""
    contexts = (iter_route_contexts(app.routes) if iter_route_contexts else app.routes)
    return sorted({(method, ctx.path) for ctx in contexts
                   if isinstance(getattr(ctx, "route", ctx), APIRoute)
                   for method in ctx.methods if method != "HEAD"})


def _fill(path: str) -> str:
    return path.replace("{", "").replace("}", "") if "{" not in path else \
        "/".join("1" if part.startswith("{") else part for part in path.split("/"))


def test_every_api_route_but_health_refuses_requests_without_a_valid_token(
        api: FastAPI, client: TestClient) -> None:
    routes = _routes(api)
    assert ("GET", "/api/v1/auth/me") in routes
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        for headers in ({}, {"Authorization": "Bearer not-a-token"},
                        {"Authorization": "Basic YWRtaW46YWRtaW4="}):
            response = client.request(method, _fill(path), headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert "detail" in response.json()


def test_me_reports_user_and_projects(api: FastAPI, client: TestClient) -> None:
    token = make_token(api, "ana", project="cardiology", role="editor")
    response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "ana" and not body["is_admin"]
    assert body["projects"] == [{"id": body["projects"][0]["id"], "name": "cardiology",
                                 "role": "editor"}]


def test_revoked_token_is_refused(api: FastAPI, client: TestClient) -> None:
    from backend.core.security import revoke_user_tokens, user_for_token

    token = make_token(api, "bo")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
    with api.state.db.session() as session:
        revoke_user_tokens(session, user_for_token(session, token))
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 401


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/api/v1/nope")
    assert response.status_code in (401, 404)
    assert "detail" in response.json()


def test_tokens_are_stored_hashed(api: FastAPI) -> None:
    from sqlalchemy import select

    from backend.db import ApiToken

    token = make_token(api, "cy")
    with api.state.db.session() as session:
        stored = session.scalars(select(ApiToken.token_hash)).all()
    assert token not in stored and len(stored) == 1


def test_openapi_schema_is_served_behind_the_token(client: TestClient,
                                                   auth: dict[str, str]) -> None:
    assert client.get("/api/v1/openapi.json").status_code == 401
    schema = client.get("/api/v1/openapi.json", headers=auth).json()
    assert "/api/v1/auth/me" in schema["paths"]


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_no_public_docs(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404
