"""Audit and live events queued around savepoints are written by the root commit only.

Events are queued in the session and written when its transaction commits. A rolled-back
savepoint (an INSERT that lost a race, caught) used to drop the whole queue, so the outer
transaction committed its changes without their audit events; a released savepoint linked
the chain and published live events (SQLite) while the transaction around it could still
roll back. Checked on both databases.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from sqlalchemy.orm import Session

from core.audit.chain import record
from core.audit.models import AuditEvent, SinkState
from core.db import commits
from core.events import LiveEvent, queue_event
from core.permissions import SYSTEM
from tests.conftest import World
from tests.support.events import live_event


def _queue(session: Session, n: int) -> None:
    record(session, actor=SYSTEM, action=f"savepoint-{n}")
    queue_event(session, live_event("savepoint", {"n": n}, release_id=f"R-{n}"))


@contextmanager
def _hearing(world: World, last: int) -> Iterator[list[int]]:
    """The numbers of the savepoint events published while inside, waiting for `last`."""
    heard: list[int] = []
    done = threading.Event()

    def hear(live_event: LiveEvent) -> None:
        if live_event.kind == "savepoint":
            heard.append(int(live_event.data["n"]))
            if live_event.data["n"] == last:
                done.set()

    _ = world.services.hub  # on PostgreSQL the events come back through LISTEN
    unsubscribe = world.services.bus.subscribe(hear)
    try:
        yield heard
        assert done.wait(10), heard
    finally:
        unsubscribe()


def _actions(world: World) -> list[str]:
    with world.services.sessions() as session:
        return list(
            session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.action.like("savepoint-%"))
                .order_by(AuditEvent.seq)
            )
        )


def test_a_rolled_back_savepoint_drops_only_its_own_audit_and_live_events(world: World) -> None:
    with _hearing(world, last=4) as heard, world.services.sessions() as session:
        _queue(session, 1)
        with session.begin_nested() as inner:  # rolled back: its events go with it
            _queue(session, 2)
            inner.rollback()
        with session.begin_nested():  # released: its events stay
            _queue(session, 3)
            with session.begin_nested() as innermost:
                _queue(session, 99)
                innermost.rollback()
        _queue(session, 4)
        session.commit()
    assert heard == [1, 3, 4]
    assert _actions(world) == ["savepoint-1", "savepoint-3", "savepoint-4"]


def test_a_savepoint_closed_without_its_release_takes_back_its_events(world: World) -> None:
    """`close()` rolls a savepoint back as `rollback()` does, and so takes back its events."""
    with _hearing(world, last=3) as heard, world.services.sessions() as session:
        _queue(session, 1)
        savepoint = session.begin_nested()
        _queue(session, 2)
        session.add(SinkState(name="inside", delivered_seq=0, failures=0))
        session.flush()
        savepoint.close()
        _queue(session, 3)
        session.commit()
    assert heard == [1, 3]
    assert _actions(world) == ["savepoint-1", "savepoint-3"]
    with world.services.sessions() as session:
        assert session.get(SinkState, "inside") is None


def test_an_insert_that_lost_a_race_in_a_savepoint_keeps_the_callers_events(
    world: World,
) -> None:
    """The pattern `core/audit/sink.py` uses: the failed flush rolls back an inner transaction
    of its own before the savepoint, which took the whole queue for a root's."""
    with world.services.sessions() as session:
        session.add(SinkState(name="taken", delivered_seq=0, failures=0))
        session.commit()
    with _hearing(world, last=3) as heard, world.services.sessions() as session:
        _queue(session, 1)
        with contextlib.suppress(IntegrityError), session.begin_nested():
            _queue(session, 2)
            session.add(SinkState(name="taken", delivered_seq=0, failures=0))
        _queue(session, 3)
        session.commit()
    assert heard == [1, 3]
    assert _actions(world) == ["savepoint-1", "savepoint-3"]


def test_a_failed_commit_writes_nothing_and_the_retry_writes_once(world: World) -> None:
    with world.services.sessions() as session:
        session.add(SinkState(name="taken", delivered_seq=0, failures=0))
        session.commit()
    with _hearing(world, last=3) as heard, world.services.sessions() as session:
        _queue(session, 1)
        session.add(SinkState(name="taken", delivered_seq=0, failures=0))
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        _queue(session, 2)
        with session.begin_nested():
            _queue(session, 3)
        session.commit()
    assert heard == [2, 3]
    assert _actions(world) == ["savepoint-2", "savepoint-3"]


def test_the_chains_first_link_made_in_a_savepoint_inside_the_commit(world: World) -> None:
    """On an empty stream the head row is created in a savepoint inside the root's commit."""
    with world.services.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events"))
        connection.execute(text("DELETE FROM audit_head"))
    with _hearing(world, last=2) as heard, world.services.sessions() as session:
        _queue(session, 1)
        with session.begin_nested():
            _queue(session, 2)
        session.commit()
        assert commits(session) == 1
    assert heard == [1, 2]
    assert _actions(world) == ["savepoint-1", "savepoint-2"]


def test_a_savepoint_released_inside_one_rolled_back_keeps_what_came_before(
    world: World,
) -> None:
    with _hearing(world, last=4) as heard, world.services.sessions() as session:
        _queue(session, 1)
        with session.begin_nested() as outer:
            _queue(session, 2)
            with session.begin_nested():  # released into `outer`, which then rolls back
                _queue(session, 3)
            outer.rollback()
        _queue(session, 4)
        session.commit()
    assert heard == [1, 4]
    assert _actions(world) == ["savepoint-1", "savepoint-4"]


def test_a_released_savepoint_neither_links_nor_publishes_before_the_commit(
    world: World,
) -> None:
    heard: list[LiveEvent] = []
    unsubscribe = world.services.bus.subscribe(heard.append)
    engine = world.services.engine
    try:
        with world.services.sessions() as session:
            _queue(session, 1)
            with session.begin_nested():
                _queue(session, 2)
            if engine.dialect.name == "postgresql":
                # The chain's head is the last lock a transaction takes, at its commit.
                with engine.connect() as other:
                    other.execute(text("SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE NOWAIT"))
            assert [e for e in heard if e.kind == "savepoint"] == []
            session.rollback()
    finally:
        unsubscribe()
    assert [e for e in heard if e.kind == "savepoint"] == []
    assert _actions(world) == []
    # a savepoint's release is not a commit: a failure after it may still be retried
    with world.services.sessions() as session:
        with session.begin_nested():
            session.execute(text("SELECT 1"))
        assert commits(session) == 0
        session.commit()
        assert commits(session) == 1


def test_committing_through_an_open_savepoint_with_queued_events_is_refused(
    world: World,
) -> None:
    sessions = world.services.sessions
    with sessions() as session:
        transaction = session.begin()
        _queue(session, 1)
        session.begin_nested()  # left open: the transaction's commit would skip the link
        with pytest.raises(InvalidRequestError, match="savepoint inside it was open"):
            transaction.commit()
        session.rollback()
    assert _actions(world) == []
    with sessions() as session:  # so is a savepoint released around one left open
        _queue(session, 1)
        outer = session.begin_nested()
        session.begin_nested()
        with pytest.raises(InvalidRequestError, match="savepoint inside it was open"):
            outer.commit()
        session.commit()  # what the refusal advises: it releases them in order
    assert _actions(world) == ["savepoint-1"]
    with sessions() as session, session.begin():  # with nothing queued, it commits as ever
        session.begin_nested()
        session.execute(text("SELECT 1"))
    with sessions() as session:  # and Session.commit() releases the savepoints first
        _queue(session, 2)
        session.begin_nested()
        session.begin_nested()
        session.commit()
    assert _actions(world) == ["savepoint-1", "savepoint-2"]


def test_a_rolled_back_transaction_still_drops_everything_it_queued(world: World) -> None:
    with world.services.sessions() as session:
        _queue(session, 1)
        session.rollback()  # before any statement ran
        _queue(session, 2)
        session.commit()
        _queue(session, 3)
        session.close()  # ends the transaction without a rollback() call
        _queue(session, 4)
        session.commit()
    assert _actions(world) == ["savepoint-2", "savepoint-4"]


def test_concurrent_writers_each_commit_exactly_their_own_huge_events(world: World) -> None:
    """Six writers at once, each transaction with a caught race and a released savepoint, and
    10,000 emoji in every event: each commit writes its own kept events, whole, and nothing
    a savepoint took back."""
    with world.services.sessions() as session:
        session.add(SinkState(name="taken", delivered_seq=0, failures=0))
        session.commit()
    note = "🚀" * 10_000
    writers, rounds = 6, 5
    kept = {
        f"savepoint-{w}-{r}-{part}"
        for w in range(writers)
        for r in range(rounds)
        for part in ("before", "released")
    }
    heard: list[str] = []
    lock, done = threading.Lock(), threading.Event()

    def hear(live_event: LiveEvent) -> None:
        if live_event.kind == "savepoint" and live_event.data.get("note") == note:
            with lock:
                heard.append(str(live_event.data["action"]))
                if len(heard) >= len(kept):
                    done.set()

    def queue_both(session: Session, action: str) -> None:
        record(session, actor=SYSTEM, action=action, data={"note": note})
        queue_event(session, live_event("savepoint", {"action": action, "note": note}))

    start = threading.Barrier(writers)

    def write(w: int) -> None:
        start.wait()
        for r in range(rounds):
            with world.services.sessions() as session:
                queue_both(session, f"savepoint-{w}-{r}-before")
                with contextlib.suppress(IntegrityError), session.begin_nested():
                    queue_both(session, f"savepoint-{w}-{r}-lost")
                    session.add(SinkState(name="taken", delivered_seq=0, failures=0))
                with session.begin_nested():
                    queue_both(session, f"savepoint-{w}-{r}-released")
                session.commit()

    _ = world.services.hub  # on PostgreSQL the events come back through LISTEN
    unsubscribe = world.services.bus.subscribe(hear)
    try:
        with ThreadPoolExecutor(writers) as pool:
            for future in [pool.submit(write, w) for w in range(writers)]:
                future.result(timeout=120)
        assert done.wait(30), len(heard)
    finally:
        unsubscribe()
    assert sorted(heard) == sorted(kept)
    with world.services.sessions() as session:
        rows = session.execute(
            select(AuditEvent.action, AuditEvent.data).where(AuditEvent.action.like("savepoint-%"))
        ).all()
    assert sorted(action for action, _ in rows) == sorted(kept)
    assert all(data == {"note": note} for _, data in rows)
