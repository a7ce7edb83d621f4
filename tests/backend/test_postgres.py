"""The same API on a real Postgres (DESIGN.md: any SQLAlchemy URL, Postgres included)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from backend.core.config import Settings
from backend.main import create_app
from tests.backend.conftest import make_token


def test_auth_and_projects_work_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, database_url=postgres_url,
                              register_demos=False))
    try:
        token = make_token(app, "pg-user", project="pg-project", role="editor")
        with TestClient(app) as client:
            me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200
            assert me.json()["projects"][0]["name"] == "pg-project"
            assert client.get("/api/v1/auth/me").status_code == 401
        assert app.state.db.engine.dialect.name == "postgresql"
    finally:
        app.state.db.dispose()
