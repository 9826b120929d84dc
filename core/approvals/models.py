"""Approval tickets and the decisions on them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, Clipped, UTCDateTime, utcnow
from core.identity.models import User


class ApprovalTicket(Base):
    """The approval a release needs: ordered steps, the decisions, the current step.

    Project, environment, risk and requester are copied from the release so the global
    inbox is one indexed query.
    """

    __tablename__ = "approval_tickets"
    __table_args__ = (
        Index("ix_tickets_state_id", "state", "id"),
        Index("ix_tickets_project_state", "project_id", "state", "id"),
        Index("ix_tickets_release", "release_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    release_number: Mapped[int] = mapped_column(ForeignKey("releases.number", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    environment: Mapped[str] = mapped_column(String(32))
    risk_level: Mapped[str] = mapped_column(String(8))
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    policy_reason: Mapped[str] = mapped_column(Clipped(500))
    current_step: Mapped[int] = mapped_column(default=0)
    current_group: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    decisions: Mapped[list[ApprovalDecision]] = relationship(
        lazy="selectin", order_by="ApprovalDecision.id"
    )
    requested_by: Mapped[User] = relationship(foreign_keys=[requested_by_id], lazy="joined")
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id], lazy="joined")


class ApprovalDecision(Base):
    """One approver's approve or reject on one step of a ticket."""

    __tablename__ = "approval_decisions"
    __table_args__ = (Index("ix_decisions_ticket_user", "ticket_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("approval_tickets.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    step_index: Mapped[int] = mapped_column()
    decision: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Clipped(2000))
    channel: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")
