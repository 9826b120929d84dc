"""Projects, their services and targets, and approval policy rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, Clipped, UTCDateTime, utcnow


class Project(Base):
    """An application owned by a team."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    promotion: Mapped[list[str] | None] = mapped_column(JSON)

    services: Mapped[list[Service]] = relationship(
        back_populates="project", order_by="Service.name"
    )
    targets: Mapped[list[Target]] = relationship(back_populates="project", order_by="Target.id")


class Service(Base):
    """A deployable unit; every target of the project runs it."""

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_services_project_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))

    project: Mapped[Project] = relationship(back_populates="services")


class Target(Base):
    """Where a project runs: environment, runtime, connection and risk tier."""

    __tablename__ = "targets"
    __table_args__ = (
        UniqueConstraint("project_id", "environment", name="uq_targets_project_environment"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(32))
    runtime: Mapped[str] = mapped_column(String(16))
    connection: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    risk_tier: Mapped[str] = mapped_column(String(8))
    preview_ttl_seconds: Mapped[int | None] = mapped_column()
    apply_on_approval: Mapped[bool] = mapped_column(default=False)
    approval_timeout_seconds: Mapped[int | None] = mapped_column()
    # Declared change windows (target's own and its project's), as WindowDecl dicts.
    windows: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    project: Mapped[Project] = relationship(back_populates="targets", lazy="joined")


class CatalogVersion(Base):
    """A token that changes with every write to projects, targets or services (database
    triggers, migration 0011): what a cached catalog was read at. One row."""

    __tablename__ = "catalog_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(32))


class PolicyRule(Base):
    """Approval steps for releases matching project / environment / risk tier (NULL = any)."""

    __tablename__ = "policy_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    environment: Mapped[str | None] = mapped_column(String(32))
    risk_tier: Mapped[str | None] = mapped_column(String(8))
    emergency: Mapped[bool] = mapped_column(default=False)
    position: Mapped[int] = mapped_column(default=0)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class Freeze(Base):
    """An ad-hoc freeze of a project's targets (one environment, or all), until a time."""

    __tablename__ = "freezes"
    # the active ones by project: each release read looks up its target's (migration 0013)
    __table_args__ = (
        Index(
            "ix_freezes_project_active",
            "project_id",
            "until",
            postgresql_where=text("lifted_at IS NULL"),
            sqlite_where=text("lifted_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    environment: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Clipped(500))
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lifted_by: Mapped[str | None] = mapped_column(String(64))
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
