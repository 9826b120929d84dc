"""Pydantic views of tokens and tickets (the ORM stays in models.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class TokenRead(BaseModel):
    """An API token as an admin (or its owner) sees it; never the secret itself."""

    id: int = Field(description="The token's id, used to revoke it.")
    user: str = Field(description="Whose token it is.")
    label: str = Field(description="Free text given when it was issued (cli, demo, oidc ...).")
    hint: str = Field(description="The token's first characters, to tell tokens apart.")
    created_at: datetime
    expires_at: datetime | None = Field(description="When it stops working; null: never.")
    revoked_at: datetime | None = Field(description="When it was revoked; null: not revoked.")
    active: bool = Field(description="Neither revoked nor expired.")


class TokenPage(BaseModel):
    """Tokens, newest first."""

    items: list[TokenRead]


class TokenCreate(BaseModel):
    """Issue a token for a user."""

    user: str = Field(min_length=1, max_length=64, description="An existing user's name.")
    label: str = Field(default="", max_length=64, description="Free text to recognise it by.")
    expires_in_seconds: int | None = Field(
        default=None,
        gt=0,
        le=10 * 366 * 24 * 3600,
        description="Lifetime in seconds; null: the token never expires.",
    )


class TokenIssued(BaseModel):
    """A new token: the secret is shown here once and never stored."""

    token: str = Field(description="The bearer token. Store it now: it cannot be shown again.")
    details: TokenRead


class TicketIssued(BaseModel):
    """A single-use chat ticket: open `/api/v1/chat?ticket=...` within its lifetime."""

    ticket: str
    expires_at: datetime
