"""Which audit events are notifications, and what a notification says."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from core.audit.models import AuditEvent
from core.ids import release_id
from core.releases.models import Release

TITLES = {
    "approval_needed": "Approval needed",
    "approved": "Approved",
    "rejected": "Rejected",
    "applied": "Applied",
    "failed": "Apply failed",
    "expired": "Expired",
    "ticket_timed_out": "Approval ticket timed out",
    "cancelled": "Cancelled",
    "rolled_back": "Rolled back",
    "rollback_failed": "Rollback failed",
}
BY_STATE = {
    "approved": "approved",
    "rejected": "rejected",
    "applied": "applied",
    "failed": "failed",
    "cancelled": "cancelled",
    "rolled_back": "rolled_back",
    "rollback_failed": "rollback_failed",
}


def classify(event: AuditEvent) -> str | None:
    """The notification an audit event stands for, or None (most events are not one)."""
    after, before = event.after_state, event.before_state
    if event.release_number is None or after is None:
        return None
    if after == "pending_approval":
        wanted = event.action == "submit" or (
            event.action == "approve" and bool((event.data or {}).get("next_step"))
        )
        return "approval_needed" if wanted else None
    if after == "expired":
        return "ticket_timed_out" if before == "pending_approval" else "expired"
    if before == after:
        return None
    return BY_STATE.get(after)


class Notice(BaseModel):
    """One notification, whatever the platform: the facts and the link back to the console."""

    event: str
    title: str
    release_id: str
    project: str
    environment: str
    lifecycle_state: str
    actor: str
    requested_by: str
    summary: str
    reason: str | None
    url: str | None
    audit_seq: int
    at: datetime
    actionable: bool

    def text(self) -> str:
        """A one-line plain text rendering (fallback text of rich messages)."""
        return (
            f"[shipdeck] {self.title}: {self.release_id} {self.project}/{self.environment} "
            f"({self.summary}) by {self.actor}"
        )


def summarize(changes: dict[str, Any]) -> str:
    """`web -> shop/web:1.4.2, api x3` from a release's requested changes."""
    parts: list[str] = []
    for service, change in sorted((changes.get("services") or {}).items()):
        if not isinstance(change, dict):
            continue
        bits = []
        if change.get("image"):
            bits.append(f"-> {change['image']}")
        if change.get("replicas") is not None:
            bits.append(f"x{change['replicas']}")
        parts.append(f"{service} {' '.join(bits)}".strip())
    return ", ".join(parts)[:300] or "change"


def build_notice(
    session: Session, event: AuditEvent, kind: str, public_url: str | None
) -> Notice | None:
    """The notice of an event, or None when its release is gone."""
    release = session.get(Release, event.release_number) if event.release_number else None
    if release is None:
        return None
    rid = release_id(release.number)
    data = event.data or {}
    reason = data.get("reason") or data.get("comment") or release.reason
    base = public_url.rstrip("/") if public_url else None
    return Notice(
        event=kind,
        title=TITLES[kind],
        release_id=rid,
        project=release.project.name,
        environment=release.target.environment,
        lifecycle_state=event.after_state or release.lifecycle_state,
        actor=event.actor,
        requested_by=release.requested_by.name,
        summary=summarize(release.changes or {}),
        reason=str(reason)[:500] if reason else None,
        url=f"{base}/#/releases/{rid}" if base else None,
        audit_seq=event.seq,
        at=event.at,
        actionable=kind == "approval_needed",
    )
