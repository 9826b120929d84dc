"""Users, role grants, API tokens and approver groups."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, UTCDateTime, utcnow


class User(Base):
    """A person (or script) that calls shipdeck."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # "<issuer> <subject>" of the OpenID Connect account signed in as this user, if any.
    oidc_subject: Mapped[str | None] = mapped_column(String(512), unique=True)

    # Loaded when asked for (making an Actor), not with every user a release or a decision
    # names: a page of releases would otherwise run a grants query per distinct user set.
    grants: Mapped[list[Grant]] = relationship(back_populates="user", lazy="select")


def _one_global(name: str, column: str) -> Index:
    """Unique `column` among the rows on every project (project_id NULL): NULLs never collide
    in a (column, project_id) unique constraint (migration 0012)."""
    everywhere = text("project_id IS NULL")
    return Index(name, column, unique=True, postgresql_where=everywhere, sqlite_where=everywhere)


class Grant(Base):
    """A role for a user, on one project or (project_id NULL) on all projects."""

    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("user_id", "project_id", name="uq_grants_user_project"),
        _one_global("uq_grants_user_global", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))

    user: Mapped[User] = relationship(back_populates="grants")


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(64), default="")
    # The first characters of the token, so a person can tell their tokens apart.
    hint: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Group(Base):
    """A named set of approvers, global (project_id NULL) or owned by one project."""

    __tablename__ = "groups"
    __table_args__ = (
        UniqueConstraint("name", "project_id", name="uq_groups_name_project"),
        _one_global("uq_groups_name_global", "name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))


class GroupMember(Base):
    """Membership of a user in a group."""

    __tablename__ = "group_members"
    __table_args__ = (Index("ix_group_members_user", "user_id"),)

    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class AuthTicket(Base):
    """A short-lived, single-use secret: a chat ticket, a sign-in hand-off or an OIDC request.

    Only the SHA-256 of the secret is stored; `used_at` is set by the one call that consumes it.
    """

    __tablename__ = "auth_tickets"
    __table_args__ = (Index("ix_auth_tickets_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
