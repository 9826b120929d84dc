"""Settings: one object, read from `SHIPDECK_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every `SHIPDECK_*` setting, with its default."""

    model_config = SettingsConfigDict(env_prefix="SHIPDECK_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./shipdeck.db",
        description="SQLAlchemy URL. SQLite file by default; postgresql+psycopg://... for teams.",
    )
    host: str = Field(default="127.0.0.1", description="Address `shipdeck serve` binds to.")
    port: int = Field(default=8000, description="Port `shipdeck serve` listens on.")
    preview_ttl_seconds: int = Field(
        default=900,
        gt=0,
        description="Preview lifetime when the target sets none (15 minutes).",
    )
    apply_lease_seconds: int = Field(
        default=60,
        gt=0,
        description="How long a replica's claim on an apply job lasts without a heartbeat.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024, gt=0, description="Largest request body the API accepts."
    )
    idempotency_ttl_seconds: int = Field(
        default=24 * 3600, gt=0, description="How long an Idempotency-Key answer is replayed."
    )
    migrate_on_start: bool = Field(
        default=True, description="Run database migrations when the server starts."
    )
    planner: Literal["rules", "llm"] = Field(
        default="rules", description="Chat planner: offline `rules`, or `llm` (needs LLM_*)."
    )
    llm_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint for the `llm` planner."
    )
    llm_model: str | None = Field(default=None, description="Model name for the `llm` planner.")
    llm_api_key: SecretStr | None = Field(
        default=None, description="API key for the `llm` planner's endpoint."
    )
    llm_timeout_seconds: float = Field(
        default=60, gt=0, description="How long one LLM request may take."
    )
    chat_max_frame_bytes: int = Field(
        default=16 * 1024,
        gt=0,
        description="Largest chat frame a client may send; also the server's WebSocket max size.",
    )
    chat_outgoing_frames: int = Field(
        default=1000,
        gt=0,
        description="Frames queued for one chat socket before a client too slow to read them "
        "is disconnected (it reconnects and gets its history).",
    )
    ws_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (e.g. https://deploy.example.com) allowed to open the chat "
        "WebSocket besides the origin the console is served from. JSON list.",
    )


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
