"""Appending to and verifying the hash-chained audit stream."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.models import AuditEvent, AuditHead
from core.audit.schemas import AuditEventRead, AuditPage
from core.db import utcnow
from core.permissions import Actor

GENESIS = "0" * 64


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _content(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "on_behalf_of": event.on_behalf_of,
        "channel": event.channel,
        "request_id": event.request_id,
        "action": event.action,
        "project": event.project,
        "release_number": event.release_number,
        "before_state": event.before_state,
        "after_state": event.after_state,
        "data": event.data,
        "prev_hash": event.prev_hash,
    }


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over the canonical JSON of the event, its previous hash included."""
    return hashlib.sha256(canonical_json(_content(event)).encode()).hexdigest()


def _lock_head(session: Session) -> AuditHead:
    head = session.scalars(select(AuditHead).where(AuditHead.id == 1).with_for_update()).first()
    if head is None:
        head = AuditHead(id=1, last_seq=0, last_hash=GENESIS, count=0)
        session.add(head)
        session.flush()
    return head


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    project: str | None = None,
    release_number: int | None = None,
    before: str | None = None,
    after: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction; the head row lock orders appends."""
    head = _lock_head(session)
    audit_event = AuditEvent(
        seq=head.last_seq + 1,
        at=utcnow(),
        actor=actor.name,
        on_behalf_of=actor.on_behalf_of,
        channel=actor.channel.value,
        request_id=actor.request_id,
        action=action,
        project=project,
        release_number=release_number,
        before_state=before,
        after_state=after,
        data=json.loads(canonical_json(data or {})),
        prev_hash=head.last_hash,
    )
    audit_event.hash = event_hash(audit_event)
    session.add(audit_event)
    head.last_seq = audit_event.seq
    head.last_hash = audit_event.hash
    head.count += 1
    session.flush()
    return audit_event


class AuditVerification(BaseModel):
    """The result of walking the chain."""

    ok: bool
    checked: int
    last_seq: int
    first_broken_seq: int | None = None
    reason: str | None = None


def verify(session: Session) -> AuditVerification:
    """Recompute every link; name the first edited, deleted or reordered row."""
    expected_prev = GENESIS
    expected_seq = 1
    checked = 0
    rows = session.scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=1000)
    )
    for row in rows:
        if row.seq != expected_seq:
            return _broken(checked, expected_seq, f"event {expected_seq} is missing (deleted)")
        if row.prev_hash != expected_prev:
            return _broken(checked, row.seq, f"event {row.seq} does not link to the one before it")
        if event_hash(row) != row.hash:
            return _broken(checked, row.seq, f"event {row.seq} was changed after it was written")
        expected_prev = row.hash
        expected_seq += 1
        checked += 1
    head = session.get(AuditHead, 1)
    last_seq = expected_seq - 1
    if head is not None and (head.last_seq != last_seq or head.last_hash != expected_prev):
        return _broken(checked, last_seq + 1, f"events after {last_seq} are missing (deleted)")
    return AuditVerification(ok=True, checked=checked, last_seq=last_seq)


def _broken(checked: int, seq: int, reason: str) -> AuditVerification:
    return AuditVerification(
        ok=False, checked=checked, last_seq=checked, first_broken_seq=seq, reason=reason
    )


def list_events(
    session: Session,
    *,
    actor: Actor,
    project: str | None = None,
    release_number: int | None = None,
    limit: int = 100,
    before: int | None = None,
) -> AuditPage:
    """Audit events the actor may read (admins: all; others: their projects'), newest first."""
    from core.ids import release_id
    from core.targets.models import Project

    query = select(AuditEvent)
    if project is not None:
        query = query.where(AuditEvent.project == project.lower())
    if release_number is not None:
        query = query.where(AuditEvent.release_number == release_number)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    if actor.role_on(None) is None:
        ids = [p for p in actor.grants if p is not None]
        names = session.scalars(select(Project.name).where(Project.id.in_(ids))).all()
        query = query.where(AuditEvent.project.in_(names))
    rows = list(session.scalars(query.order_by(AuditEvent.seq.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(
        items=[
            AuditEventRead(
                seq=r.seq,
                at=r.at,
                actor=r.actor,
                on_behalf_of=r.on_behalf_of,
                channel=r.channel,
                request_id=r.request_id,
                action=r.action,
                project=r.project,
                release_id=release_id(r.release_number) if r.release_number else None,
                before_state=r.before_state,
                after_state=r.after_state,
                data=r.data,
                hash=r.hash,
            )
            for r in rows
        ],
        next_before=rows[-1].seq if more and rows else None,
    )
