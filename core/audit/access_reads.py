"""Reading and pruning the access log (admins): who looked at what, and retention."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.audit.chain import record
from core.audit.models import AccessRecord
from core.audit.schemas import AccessPage, AccessPruned, AccessRecordRead
from core.permissions import Action, Actor, require

PRUNED = "access_log_pruned"
PRUNE_BATCH = 5000


def list_access(
    session: Session,
    *,
    actor: Actor,
    user: str | None = None,
    project: str | None = None,
    tool: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: int | None = None,
    limit: int = 100,
) -> AccessPage:
    """Access records matching the filters, newest first (keyset paging on `before`); admins."""
    require(actor, Action.admin, None)
    query = select(AccessRecord.__table__)
    if user is not None:
        query = query.where(AccessRecord.actor == user)
    if project is not None:
        query = query.where(AccessRecord.project == project.lower())
    if tool is not None:
        query = query.where(AccessRecord.tool == tool)
    if since is not None:
        query = query.where(AccessRecord.at >= since)
    if until is not None:
        query = query.where(AccessRecord.at < until)
    if before is not None:
        query = query.where(AccessRecord.id < before)
    rows = session.execute(query.order_by(AccessRecord.id.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    items = [AccessRecordRead.model_validate(row, from_attributes=True) for row in rows[:limit]]
    return AccessPage(items=items, next_before=items[-1].id if more and items else None)


def prune_access(session: Session, *, actor: Actor, before: datetime) -> AccessPruned:
    """Delete access records older than `before` in bounded transactions; a chain event says so.

    Each batch is its own short transaction (a long prune never holds the write lock for
    long); the chain event, with the count, commits with the last batch.
    """
    require(actor, Action.admin, None)
    deleted = 0
    while True:
        ids = select(AccessRecord.id).where(AccessRecord.at < before).limit(PRUNE_BATCH)
        batch = list(session.scalars(ids))
        if batch:
            session.execute(delete(AccessRecord).where(AccessRecord.id.in_(batch)))
            deleted += len(batch)
        if len(batch) < PRUNE_BATCH:
            break
        session.commit()
    record(
        session,
        actor=actor,
        action=PRUNED,
        data={"before": before.isoformat(), "deleted": deleted},
    )
    session.commit()
    return AccessPruned(before=before, deleted=deleted)
