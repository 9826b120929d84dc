"""The delivery log: what was sent where, how often it was tried, and what came back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.ids import release_id
from core.notify.models import NotifyDelivery
from core.permissions import Action, Actor, require

STATES = ("pending", "sending", "delivered", "dead")


class DeliveryRead(BaseModel):
    """One delivery of one event on one route."""

    id: int
    route: str
    event: str
    audit_seq: int
    release_id: str | None
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[dict[str, Any]]


class DeliveryPage(BaseModel):
    """Newest first; pass `next_before` for the next page."""

    items: list[DeliveryRead]
    next_before: int | None


def list_deliveries(
    session: Session,
    *,
    actor: Actor,
    route: str | None = None,
    state: str | None = None,
    limit: int = 50,
    before: int | None = None,
) -> DeliveryPage:
    """The delivery log, newest first (admins: routes name every project)."""
    require(actor, Action.admin, None)
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}", state=state)
    if not 1 <= limit <= 200:
        raise InvalidInput("limit is 1 to 200")
    query = select(NotifyDelivery)
    if route is not None:
        query = query.where(NotifyDelivery.route == route[:64])
    if state is not None:
        query = query.where(NotifyDelivery.state == state)
    if before is not None:
        query = query.where(NotifyDelivery.id < before)
    rows = list(session.scalars(query.order_by(NotifyDelivery.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        DeliveryRead(
            id=r.id,
            route=r.route,
            event=r.event,
            audit_seq=r.event_seq,
            release_id=release_id(r.release_number) if r.release_number else None,
            state=r.state,
            attempts=r.attempts,
            next_attempt_at=r.next_attempt_at,
            last_status=r.last_status,
            last_error=r.last_error,
            created_at=r.created_at,
            delivered_at=r.delivered_at,
            log=r.log,
        )
        for r in rows
    ]
    return DeliveryPage(items=items, next_before=rows[-1].id if more and rows else None)
