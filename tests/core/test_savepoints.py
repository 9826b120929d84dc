"""A savepoint that rolls back takes back only what was queued inside it.

Audit events and live events are queued in the session and written at commit. A rolled-back
savepoint (an INSERT that lost a race, caught) used to drop the whole queue, so the outer
transaction committed its changes without their audit events. Checked on both databases.
"""

from __future__ import annotations

import threading

from sqlalchemy import select

from core.audit.chain import record
from core.audit.models import AuditEvent
from core.db import utcnow
from core.events import LiveEvent, queue_event
from core.permissions import SYSTEM
from tests.conftest import World


def _live(n: int) -> LiveEvent:
    return LiveEvent(
        kind="savepoint",
        release_id=f"R-{n}",
        project="shop",
        environment="prod",
        lifecycle_state="applying",
        at=utcnow(),
        data={"n": n},
    )


def test_a_rolled_back_savepoint_drops_only_its_own_audit_and_live_events(world: World) -> None:
    heard: list[int] = []
    done = threading.Event()

    def hear(live_event: LiveEvent) -> None:
        if live_event.kind == "savepoint":
            heard.append(int(live_event.data["n"]))
            if live_event.data["n"] == 4:
                done.set()

    _ = world.services.hub  # on PostgreSQL the events come back through LISTEN
    unsubscribe = world.services.bus.subscribe(hear)
    try:
        with world.services.sessions() as session:
            for n in (1,):
                record(session, actor=SYSTEM, action=f"savepoint-{n}")
                queue_event(session, _live(n))
            with session.begin_nested() as inner:  # rolled back: its events go with it
                record(session, actor=SYSTEM, action="savepoint-2")
                queue_event(session, _live(2))
                inner.rollback()
            with session.begin_nested():  # released: its events stay
                record(session, actor=SYSTEM, action="savepoint-3")
                queue_event(session, _live(3))
                with session.begin_nested() as innermost:
                    record(session, actor=SYSTEM, action="savepoint-x")
                    queue_event(session, _live(99))
                    innermost.rollback()
            record(session, actor=SYSTEM, action="savepoint-4")
            queue_event(session, _live(4))
            session.commit()
        assert done.wait(10), heard
    finally:
        unsubscribe()
    assert heard == [1, 3, 4]
    with world.services.sessions() as session:
        actions = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.action.like("savepoint-%"))
            .order_by(AuditEvent.seq)
        ).all()
    assert actions == ["savepoint-1", "savepoint-3", "savepoint-4"]


def test_a_rolled_back_transaction_still_drops_everything_it_queued(world: World) -> None:
    with world.services.sessions() as session:
        record(session, actor=SYSTEM, action="dropped-1")
        queue_event(session, _live(1))
        session.rollback()
        record(session, actor=SYSTEM, action="kept-2")
        session.commit()
    with world.services.sessions() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.action.in_(["dropped-1", "kept-2"]))
        ).all()
    assert actions == ["kept-2"]
