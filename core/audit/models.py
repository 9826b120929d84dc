"""The append-only, hash-chained audit stream."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, Clipped, UTCDateTime


class AuditEvent(Base):
    """Who did what, through which channel, with the state before and after.

    `release_number` is a plain column, not a foreign key: the record outlives anything.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_release", "release_number", "seq"),)

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    on_behalf_of: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(Clipped(64))
    action: Mapped[str] = mapped_column(String(48))
    project: Mapped[str | None] = mapped_column(String(64), index=True)
    release_number: Mapped[int | None] = mapped_column()
    before_state: Mapped[str | None] = mapped_column(String(24))
    after_state: Mapped[str | None] = mapped_column(String(24))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The single row naming the chain's last link; locking it serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(default=0)
