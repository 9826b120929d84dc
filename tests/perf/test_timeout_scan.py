"""A sweeper pass does not read the open tickets that cannot have timed out yet.

A pass runs every few seconds on every replica. Loading every open ticket to compare its age
with its target's timeout cost ~0.5 s of CPU per pass at 20,000 open tickets (issue 14): the
pass must read only the tickets older than the shortest timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select

from core.approvals.models import ApprovalTicket
from core.db import utcnow
from core.flows.expiry import ExpirySweep
from core.ids import parse_release_id
from core.releases.models import Release
from tests.conftest import World
from tests.support import engine_events
from tests.support.calls import call, deploy, sql

YOUNG = 3000


@contextmanager
def rows_read(world: World) -> Iterator[list[int]]:
    """Count the rows each SELECT of this thread returns while the block runs.

    The statements are caught as sent to the database (with their parameters) and run again
    afterwards on the unchanged data: how many rows each one handed back to the pass.
    """
    engine = world.services.engine
    me = threading.get_ident()
    sent: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if threading.get_ident() == me and statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    counts: list[int] = []
    engine_events.listen(engine, "before_cursor_execute", before)
    try:
        yield counts
    finally:
        engine_events.remove(engine, "before_cursor_execute", before)
    with engine.connect() as connection:
        counts.extend(
            len(connection.exec_driver_sql(statement, parameters).all())
            for statement, parameters in sent
        )


def _young_tickets(world: World, template: int, count: int) -> None:
    """`count` more releases waiting for approval, each with a ticket opened just now."""
    with world.services.engine.begin() as connection:
        release = dict(
            connection.execute(select(Release.__table__).where(Release.number == template))
            .one()
            ._mapping
        )
        ticket = dict(
            connection.execute(
                select(ApprovalTicket.__table__).where(ApprovalTicket.release_number == template)
            )
            .one()
            ._mapping
        )
        release.pop("number")
        ticket.pop("id")
        connection.execute(insert(Release), [release] * count)
        numbers = connection.execute(
            select(Release.number).where(Release.number > template).order_by(Release.number)
        ).scalars()
        now = utcnow()
        connection.execute(
            insert(ApprovalTicket),
            [{**ticket, "release_number": n, "created_at": now} for n in numbers],
        )


def test_a_pass_reads_no_ticket_younger_than_the_shortest_timeout(world: World) -> None:
    old = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=old.id)
    number = parse_release_id(old.id)
    _young_tickets(world, number, YOUNG)
    sweep = ExpirySweep()
    with world.services.sessions() as session, rows_read(world) as counts:
        assert sweep.run(session) == 0
    # The targets' timeouts and nothing per ticket: not one of the 3,001 open tickets.
    assert sum(counts) < 50, counts

    # The one ticket that did wait past its timeout is read, and times out.
    sql(
        world,
        "UPDATE approval_tickets SET created_at = :t WHERE release_number = :n",
        t=(utcnow() - timedelta(hours=73)).replace(tzinfo=None).isoformat(sep=" "),
        n=number,
    )
    with world.services.sessions() as session, rows_read(world) as counts:
        assert sweep.run(session) == 1
    assert sum(counts) < 50, counts
    assert call(world, "alice", "get_release", release_id=old.id).lifecycle_state == "expired"
    with world.services.sessions() as session:
        states = session.scalars(
            select(ApprovalTicket.state).where(ApprovalTicket.release_number >= number)
        ).all()
    assert sorted(set(states)) == ["expired", "pending"] and states.count("expired") == 1
