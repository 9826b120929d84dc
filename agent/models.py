"""Chat sessions, their messages and cards (the AI command bridge's own tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, Clipped, UTCDateTime, utcnow


class ChatSession(Base):
    """One conversation of one user; reloadable by id."""

    __tablename__ = "chat_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    planner: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_active_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChatMessage(Base):
    """A frame of a session, as sent or received (the history)."""

    __tablename__ = "chat_messages"
    __table_args__ = (Index("ix_chat_messages_session", "session_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(4))  # in | out
    frame: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChatCard(Base):
    """A confirmation card (owner = requester) or an approval card (owner = an approver)."""

    __tablename__ = "chat_cards"
    __table_args__ = (
        Index("ix_chat_cards_user_state", "user_id", "state"),
        Index("ix_chat_cards_release", "release_number"),
        # Replicas handle the same live event: one open card per (release, owner, purpose).
        Index(
            "uq_chat_cards_open",
            "release_number",
            "user_id",
            "kind",
            "tool",
            unique=True,
            sqlite_where=text("state = 'open' AND release_number IS NOT NULL"),
            postgresql_where=text("state = 'open' AND release_number IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(16))  # confirmation | approval
    tool: Mapped[str] = mapped_column(String(48))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    release_number: Mapped[int | None] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="open")  # open|done|void|expired
    outcome: Mapped[str | None] = mapped_column(Clipped(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
