"""Releases, their previews and runtime progress events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, Clipped, UTCDateTime, utcnow
from core.identity.models import User
from core.targets.models import Project, Target


class Release(Base):
    """One requested change to one target; `lifecycle_state` + `version` are its current value."""

    __tablename__ = "releases"
    __table_args__ = (
        Index("ix_releases_target_state", "target_id", "lifecycle_state"),
        Index("ix_releases_project_created", "project_id", "number"),
        # The database itself refuses a second applying release on one target.
        Index(
            "uq_releases_one_applying_per_target",
            "target_id",
            unique=True,
            sqlite_where=text("lifecycle_state = 'applying'"),
            postgresql_where=text("lifecycle_state = 'applying'"),
        ),
    )

    number: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"))
    kind: Mapped[str] = mapped_column(String(16), default="deploy")
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    services_key: Mapped[str] = mapped_column(String(512))
    lifecycle_state: Mapped[str] = mapped_column(String(24), index=True)
    version: Mapped[int] = mapped_column(default=1)
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    channel: Mapped[str] = mapped_column(String(16))
    emergency: Mapped[bool] = mapped_column(default=False)
    rollback_of: Mapped[int | None] = mapped_column(ForeignKey("releases.number"))
    expired_from: Mapped[str | None] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(Clipped(2000))
    base_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    applied_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An approved release waiting for its busy target: its place in that target's apply queue.
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queued_by: Mapped[str | None] = mapped_column(String(64))
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("releases.number"))
    promotion_override_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    project: Mapped[Project] = relationship(lazy="joined")
    target: Mapped[Target] = relationship(lazy="joined")
    requested_by: Mapped[User] = relationship(lazy="joined")


class Preview(Base):
    """A computed diff between live and desired state, valid until `expires_at`."""

    __tablename__ = "previews"
    __table_args__ = (
        Index("ix_previews_release", "release_number", "id"),
        Index("ix_previews_expires_at", "expires_at"),  # the sweeper reads by expiry time
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    release_number: Mapped[int] = mapped_column(ForeignKey("releases.number", ondelete="CASCADE"))
    desired: Mapped[dict[str, Any]] = mapped_column(JSON)
    diff: Mapped[dict[str, Any]] = mapped_column(JSON)
    diff_hash: Mapped[str] = mapped_column(String(64))
    base_fingerprint: Mapped[str] = mapped_column(String(64))
    risk_level: Mapped[str] = mapped_column(String(8))
    risk_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProgressEvent(Base):
    """A runtime progress line of one release (pulling, rolling out, healthy, ...)."""

    __tablename__ = "progress_events"
    __table_args__ = (Index("ix_progress_release", "release_number", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    release_number: Mapped[int] = mapped_column(ForeignKey("releases.number", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    service: Mapped[str | None] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Clipped(4000))
