"""Declared notification routes, identity links, and one delivery row per event per route."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, Clipped, UTCDateTime, utcnow


class NotifyRoute(Base):
    """Where notifications go (`webhook`, `slack` or `feishu`) and which ones, by filter.

    Empty filter lists match everything. A secret is referenced by environment variable name
    (`secret_env`) so the database never holds it; `secret` is for files kept out of git.
    """

    __tablename__ = "notify_routes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str | None] = mapped_column(String(500))
    secret_env: Mapped[str | None] = mapped_column(String(128))
    projects: Mapped[list[str]] = mapped_column(JSON, default=list)
    environments: Mapped[list[str]] = mapped_column(JSON, default=list)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)


class NotifyIdentity(Base):
    """A chat platform account linked to a shipdeck user (who clicks is who decides)."""

    __tablename__ = "notify_identities"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(64))


class NotifyDelivery(Base):
    """One notification of one audit event on one route: its state, attempts and next try.

    `(route, event_seq)` is unique, so an event fans out to a route once whatever the number
    of replicas; a row is claimed (`claimed_by` until `claimed_until`) before it is sent.
    """

    __tablename__ = "notify_deliveries"
    __table_args__ = (
        UniqueConstraint("route", "event_seq", name="uq_notify_deliveries_route_event"),
        Index("ix_notify_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    route: Mapped[str] = mapped_column(String(64))
    event_seq: Mapped[int] = mapped_column()
    event: Mapped[str] = mapped_column(String(32))
    release_number: Mapped[int | None] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Clipped(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
