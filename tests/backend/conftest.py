"""API fixtures: the real app from ``create_app`` on a temp SQLite file, and tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend.core.config import Settings
from backend.core.security import ensure_project, ensure_user, grant, mint_token
from backend.main import create_app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", register_demos=False)


@pytest.fixture
def api(settings: Settings) -> Iterator[FastAPI]:
    app = create_app(settings)
    yield app
    app.state.db.dispose()


@pytest.fixture
def client(api: FastAPI) -> Iterator[TestClient]:
    with TestClient(api) as c:
        yield c


def make_token(api: FastAPI, name: str, *, project: str | None = None, role: str = "viewer",
               is_admin: bool = False) -> str:
    with api.state.db.session() as session:
        user = ensure_user(session, name, is_admin=is_admin)
        if project:
            grant(session, user, ensure_project(session, project), role)
        return mint_token(session, user)


@pytest.fixture
def admin_token(api: FastAPI) -> str:
    return make_token(api, "admin", is_admin=True)


@pytest.fixture
def auth(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}
