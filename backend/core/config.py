"""All service settings in one place: environment variables prefixed ``CROSSLENS_``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings for the API and UI processes; tests pass an instance to the factories."""

    model_config = SettingsConfigDict(env_prefix="CROSSLENS_", extra="ignore")

    data_dir: Path = Path(".crosslens")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: a SQLite file in data_dir")
    dask_scheduler: str | None = Field(
        default=None, description="address of an external Dask scheduler; default: embedded")
    host: str = "127.0.0.1"
    api_port: int = 8000
    ui_port: int = 8050
    api_url: str | None = Field(default=None, description="what the UI calls; default: "
                                "http://<host>:<api_port>")
    max_upload_mb: int = 512
    max_unzipped_mb: int = 2048
    torch_threads: int = Field(default=1, description="torch intra-op threads per process; "
                               "tiny models run far faster with one")
    register_demos: bool = True

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'crosslens.db').resolve()}"

    @property
    def resolved_api_url(self) -> str:
        return (self.api_url or f"http://{self.host}:{self.api_port}").rstrip("/")

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"
