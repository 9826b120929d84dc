"""Settings: one object, read from `SHIPDECK_*` environment variables."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every `SHIPDECK_*` setting, with its default."""

    model_config = SettingsConfigDict(env_prefix="SHIPDECK_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./shipdeck.db",
        description="SQLAlchemy URL. SQLite file by default; postgresql+psycopg://... for teams.",
    )
    db_pool_size: int = Field(
        default=40,
        ge=1,
        le=1000,
        description="PostgreSQL connections each server process keeps (plus half as many more "
        "under bursts): one per request thread. Half of them are opened in autocommit for reads "
        "and one-statement writes, half for transactions. Replicas x workers x 1.5 x this must "
        "stay under the server's max_connections.",
    )
    sqlite_read_threads: int = Field(
        default=2,
        ge=1,
        le=1000,
        description="On SQLite, how many REST reads one server process runs at once; more "
        "wait their turn. CPython's sqlite3 lets go of the GIL for every row and every column "
        "it fetches, so many threads fetching at once each wait for it again and again: at 50 "
        "clients 40 threads served about half the reads 2 did. PostgreSQL ignores it.",
    )
    db_call_threads: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="On PostgreSQL, how many calls one server process runs at once (REST tool "
        "calls, chat frames, MCP calls, their token checks); more wait their turn, first come "
        "first served. A call steps out of its turn while it waits on a runtime (a cluster's "
        "API, the Docker engine) or a language model, and REST reads of a runtime's live "
        "state take none. Dozens of threads sharing one interpreter lock each ran a little at "
        "a time, so a write's tail reached seconds at 50 clients; 8 turns served as much with "
        "none over one. SQLite ignores it (its reads have `sqlite_read_threads`, its writers "
        "queue for the write lock).",
    )
    host: str = Field(default="127.0.0.1", description="Address `shipdeck serve` binds to.")
    port: int = Field(default=8000, description="Port `shipdeck serve` listens on.")
    preview_ttl_seconds: int = Field(
        default=900,
        gt=0,
        description="Preview lifetime when the target sets none (15 minutes).",
    )
    approval_timeout_hours: float = Field(
        default=72,
        gt=0,
        description="How long a pending approval ticket waits before it times out (the "
        "release ends expired and the requester is told); targets may set their own.",
    )
    apply_lease_seconds: int = Field(
        default=60,
        gt=0,
        description="How long a replica's claim on an apply job lasts without a heartbeat.",
    )
    sweep_interval_seconds: float = Field(
        default=5,
        gt=0,
        le=3600,
        description="How often each replica expires stale previews and takes over dead applies.",
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
    planner: Literal["rules", "llm", "hybrid"] | None = Field(
        default=None,
        description="Chat planner: offline `rules`, `llm` (needs LLM_*), or `hybrid` (rules "
        "first, the LLM for the rest). Unset: `hybrid` when an LLM endpoint is set, else `rules`.",
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
    llm_max_tokens: int = Field(
        default=512, gt=0, description="Most tokens the LLM may generate per request."
    )
    llm_turn_seconds: float = Field(
        default=120, gt=0, description="Overall deadline of one chat turn of the LLM planner."
    )
    timezone: str | None = Field(
        default=None,
        description="IANA time zone (e.g. Europe/Berlin) in which chat reads times such as "
        '"freeze prod until Monday 09:00" and cards show them. Unset: the server\'s own zone '
        "(TZ, else /etc/localtime, else UTC).",
    )
    chat_max_cards_per_turn: int = Field(
        default=5, gt=0, description="Most releases or cards one chat message may create."
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
    chat_compress_frames: bool = Field(
        default=False,
        description="Offer permessage-deflate on the chat WebSocket. Off by default: frames are "
        "small (a card is 1-3 KB) and compressing each one for every session cost 27-29% of "
        "the socket writer's time in a card fan-out; turn on for slow links.",
    )
    ws_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (e.g. https://deploy.example.com) allowed to open the chat "
        "WebSocket besides the origin the console is served from. JSON list.",
    )
    chat_ticket_ttl_seconds: int = Field(
        default=30,
        gt=0,
        le=300,
        description="Lifetime of a single-use chat ticket (`POST /api/v1/chat/tickets`).",
    )
    chat_auth_seconds: float = Field(
        default=5,
        gt=0,
        le=60,
        description="How long a chat socket opened without a header or ticket has to send its "
        'first frame, `{"type": "auth", "token" | "ticket": ...}`, before it is closed (1008).',
    )
    identity_recheck_seconds: float = Field(
        default=0.5,
        gt=0,
        le=5,
        description="How often open chat sockets re-check their token and roles while idle.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer URL (e.g. https://keycloak.example/realms/main); "
        "unset: sign-in with OIDC is off.",
    )
    oidc_client_id: str | None = Field(default=None, description="OIDC client id.")
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="OIDC client secret (confidential clients)."
    )
    oidc_scopes: str = Field(
        default="openid profile email", description="Scopes asked for at sign-in."
    )
    oidc_username_claim: str = Field(
        default="preferred_username", description="ID token / userinfo claim naming the user."
    )
    oidc_groups_claim: str = Field(
        default="groups", description="Claim listing the user's groups at the provider."
    )
    oidc_group_roles: dict[str, str] = Field(
        default_factory=dict,
        description='Provider group -> shipdeck role, JSON: {"ops": "admin", '
        '"shop-devs": "requester@shop"} ("ROLE" on every project, "ROLE@PROJECT" on one).',
    )
    oidc_redirect_url: str | None = Field(
        default=None,
        description="Public callback URL registered at the provider; default: derived from "
        "the request (`<origin>/api/v1/auth/oidc/callback`).",
    )
    oidc_session_hours: float = Field(
        default=12, gt=0, le=24 * 30, description="Lifetime of the token a sign-in issues."
    )
    oidc_link_by_name: bool = Field(
        default=False,
        description="Let a provider account sign in as an existing local user of the same "
        "name (off: only users first created through OIDC, or linked, may sign in).",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Where shipdeck keeps its own files (the generated audit key). Default: the "
        "SQLite database's folder, or ~/.local/share/shipdeck for PostgreSQL.",
    )
    audit_key: SecretStr | None = Field(
        default=None,
        description="The audit chain's HMAC key (at least 32 characters). Every replica must "
        "share it. Unset: a key is generated once into the data directory (mode 0600).",
    )
    audit_retired_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated earlier values of SHIPDECK_AUDIT_KEY, kept to verify the "
        "events they signed after a rotation.",
    )
    audit_webhook_url: str | None = Field(
        default=None, description="Stream every audit event to this URL (POST, JSON)."
    )
    audit_webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA-256 key signing each webhook body (header X-Shipdeck-Signature).",
    )
    audit_stream_in_serve: bool = Field(
        default=False,
        description="Stream the audit chain to SHIPDECK_AUDIT_WEBHOOK_URL from inside `shipdeck "
        "serve` (every replica may: each batch is claimed, so it is delivered once) instead of "
        "running `shipdeck audit stream`.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="The bearer token Prometheus scrapes `GET /metrics` with (at least 16 "
        "printable ASCII characters; a secret of its own, no user's). Unset or empty: /metrics "
        "answers 404.",
    )

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _scrape_token(cls, value: object) -> object:
        """Stripped: a Secret made from a file ends in a newline, and Prometheus strips the
        token file it sends. Printable ASCII only: an HTTP header carries nothing else intact,
        so any other token could never be sent back."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None
        if not re.fullmatch(r"[\x21-\x7e]{16,}", value):
            raise ValueError("needs at least 16 printable ASCII characters and no spaces")
        return value

    allowed_path_roots: list[Path] = Field(
        default_factory=list,
        description="Folders a declaration's compose_files and kubeconfig may point into "
        "besides the declaration file's own folder (JSON list, e.g. "
        '\'["/srv/deploy", "/etc/shipdeck/kube"]\').',
    )


class BadSettings(ValueError):
    """Settings from the environment that do not validate: which variables, and why."""


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once (BadSettings names every variable that is wrong)."""
    try:
        return Settings()
    except ValidationError as exc:
        # Named and explained, never echoed: a value may be a password or a key.
        problems = "; ".join(
            f"SHIPDECK_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise BadSettings(f"bad settings: {problems}") from None
