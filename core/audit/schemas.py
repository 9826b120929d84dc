"""Audit views."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEventRead(BaseModel):
    """One audit event as REST and tools show it."""

    seq: int
    at: datetime
    actor: str
    on_behalf_of: str | None
    channel: str
    request_id: str | None
    action: str
    project: str | None
    release_id: str | None
    before_state: str | None
    after_state: str | None
    data: dict[str, Any]
    hash: str


class AuditPage(BaseModel):
    """A page of audit events, newest first; pass `next_before` for the next page."""

    items: list[AuditEventRead]
    next_before: int | None


class AccessRecordRead(BaseModel):
    """One read in the access log: who looked at what, through which door."""

    id: int
    at: datetime
    actor: str
    on_behalf_of: str | None
    channel: str
    request_id: str | None
    tool: str
    project: str | None
    args: str


class AccessPage(BaseModel):
    """A page of access records, newest first; pass `next_before` for the next page."""

    items: list[AccessRecordRead]
    next_before: int | None


class AccessPruned(BaseModel):
    """What a retention run removed from the access log."""

    before: datetime
    deleted: int
