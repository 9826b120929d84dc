"""The audit stream's use cases: record, verify, checkpoint, rotate keys, read records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.audit.chain import (
    GENESIS,
    ROTATED,
    bind_engine,
    canonical_json,
    keyring_of,
    record,
)
from core.audit.keys import Keyring
from core.audit.models import AuditEvent, AuditHead
from core.audit.schemas import AuditEventRead, AuditPage
from core.audit.verify import (
    AuditVerification,
    Checkpoint,
    read_snapshot,
    sign_checkpoint,
    verify,
)
from core.errors import InvalidInput
from core.permissions import Action, Actor, require

__all__ = [
    "GENESIS",
    "AuditVerification",
    "Checkpoint",
    "canonical_json",
    "checkpoint",
    "list_events",
    "record",
    "rotate_key",
    "verify",
]


def checkpoint(session: Session, *, keyring: Keyring | None = None) -> Checkpoint:
    """A signed `{seq, head_hash, at}` of the chain's current head, to keep elsewhere."""
    ring = keyring or keyring_of(session)
    with read_snapshot(bind_engine(session)) as connection:
        head = connection.execute(select(AuditHead.__table__).where(AuditHead.id == 1)).first()
    seq, head_hash = (head.last_seq, head.last_hash) if head is not None else (0, GENESIS)
    return sign_checkpoint(ring, seq, head_hash)


def rotate_key(session: Session, *, actor: Actor, keyring: Keyring | None = None) -> str:
    """Switch the chain to a new signing key; the switch is an event signed by the old key."""
    require(actor, Action.admin, None)
    ring = keyring or keyring_of(session)
    if ring.path is None:  # SHIPDECK_AUDIT_KEY: the operator already changed it
        head = session.get(AuditHead, 1)
        if head is None or head.key_id in (None, ring.current_id):
            ring.rotate()  # raises, saying how to rotate a key given by the environment
    else:
        ring.rotate()
    record(session, actor=actor, action=ROTATED)
    session.commit()
    return ring.current_id


def list_events(
    session: Session,
    *,
    actor: Actor,
    project: str | None = None,
    release_number: int | None = None,
    actor_name: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    before: int | None = None,
) -> AuditPage:
    """Audit events the actor may read (admins: all; others: their projects'), newest first.

    `actor_name` matches who acted or on whose behalf; `since <= at < until`.
    """
    from core.ids import release_id
    from core.targets.models import Project

    query = select(AuditEvent)
    if actor_name is not None:
        query = query.where(
            or_(AuditEvent.actor == actor_name, AuditEvent.on_behalf_of == actor_name)
        )
    if action is not None:
        query = query.where(AuditEvent.action == action)
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} needs a time zone (e.g. 2026-12-01T09:00:00Z)")
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    if project is not None:
        query = query.where(AuditEvent.project == project.lower())
    if release_number is not None:
        query = query.where(AuditEvent.release_number == release_number)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    if (ids := actor.visible_projects()) is not None:
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
