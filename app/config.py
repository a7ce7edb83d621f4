"""UI settings: the same ``CROSSLENS_*`` variables as the API, only those the UI needs.

The UI never imports ``backend`` or ``estimators`` (it runs on other machines than the API),
so it reads its own few settings here.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class UISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CROSSLENS_", extra="ignore")

    host: str = "127.0.0.1"
    api_port: int = 8000
    ui_port: int = 8050
    api_url: str | None = Field(default=None, description="default http://<host>:<api_port>")

    @property
    def resolved_api_url(self) -> str:
        return (self.api_url or f"http://{self.host}:{self.api_port}").rstrip("/")
