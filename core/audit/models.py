"""The append-only, HMAC-chained audit stream, the access log and the sink cursors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, Clipped, UTCDateTime

REQUEST_ID_LIMIT = 64


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
    request_id: Mapped[str | None] = mapped_column(Clipped(REQUEST_ID_LIMIT))
    action: Mapped[str] = mapped_column(String(48))
    project: Mapped[str | None] = mapped_column(String(64), index=True)
    release_number: Mapped[int | None] = mapped_column()
    before_state: Mapped[str | None] = mapped_column(String(24))
    after_state: Mapped[str | None] = mapped_column(String(24))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(16))


class AuditHead(Base):
    """The single row naming the chain's last link; locking it serialises appends.

    `base_seq`/`base_hash` name the last event archived away (0 and the genesis hash until a
    retention cut). The row is signed (`mac`), so moving it needs the key.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(default=0)
    base_seq: Mapped[int] = mapped_column(default=0)
    base_hash: Mapped[str | None] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(16))
    mac: Mapped[str | None] = mapped_column(String(64))


class AccessRecord(Base):
    """A read (who looked at what), kept out of the chain so reads never wait on its lock."""

    __tablename__ = "audit_access_log"
    __table_args__ = (Index("ix_access_actor_at", "actor", "at"), Index("ix_access_at", "at"))

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    on_behalf_of: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(64))
    tool: Mapped[str] = mapped_column(String(64))
    project: Mapped[str | None] = mapped_column(String(64))
    args: Mapped[str] = mapped_column(String(2000))


class SinkState(Base):
    """How far a streaming sink has received the chain, and its retry state."""

    __tablename__ = "audit_sinks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    delivered_seq: Mapped[int] = mapped_column(default=0)
    failures: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
