"""The audit chain's head is held for one round trip (PostgreSQL).

Every writer of every replica takes the one head row last, at commit, so how long a writer
holds it is how long every other writer waits. Under load each round trip the holding thread
makes costs it a turn of the interpreter lock among the server's busy threads (10-30 ms): the
head used to be held across five (the events, the head, the live outbox, the NOTIFY, the
COMMIT), 20 writes a second kept it locked all the time and the write-mix p99 at 50 clients
was 3-5 s (issue 14). Now the outbox is written before the lock and the events, the head and
the COMMIT go in one round trip. SQLite has no row lock to hold: its writers take turns for
the whole transaction (core/sqlite_gate.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import IntegrityError

from core.audit.models import AuditHead
from core.audit.service import verify
from core.releases.models import Release
from tests.conftest import World, build_world
from tests.support import engine_events
from tests.support.calls import call, deploy, sql


@pytest.fixture
def pg_world(pg_services: Any) -> World:
    return build_world(pg_services)


@contextmanager
def head_watch(world: World) -> Iterator[dict[str, Any]]:
    """What this thread's transactions send while they hold the head, and what the database
    says of the holder when SQLAlchemy comes to commit."""
    seen: dict[str, Any] = {"under": [], "at_commit": []}
    engine = world.services.engine
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def before(conn: Connection, _c: Any, statement: str, *_: Any) -> None:
        if conn.info.get("holds_head"):
            seen["under"].append(" ".join(statement.split()[:3]))

    def after(conn: Connection, _c: Any, statement: str, *_: Any) -> None:
        if statement.startswith("SELECT audit_head") and "FOR UPDATE" in statement:
            conn.info["holds_head"] = True

    def committing(conn: Connection) -> None:
        if not conn.info.pop("holds_head", False):
            return
        pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        row = watcher.execute(
            text("SELECT state, backend_xid IS NOT NULL FROM pg_stat_activity WHERE pid = :p"),
            {"p": pid},
        ).one()
        seen["at_commit"].append((row[0], row[1]))

    def rolled_back(conn: Connection) -> None:
        conn.info.pop("holds_head", None)

    hooks: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", before),
        ("after_cursor_execute", after),
        ("commit", committing),
        ("rollback", rolled_back),
    ]
    for name, fn in hooks:
        engine_events.listen(engine, name, fn)
    try:
        yield seen
    finally:
        for name, fn in hooks:
            engine_events.remove(engine, name, fn)
        watcher.close()


def test_a_submit_holds_the_audit_head_for_one_round_trip(pg_world: World) -> None:
    world = pg_world
    older = deploy(world, "alice", "shop", "prod", web={"image_tag": "9.0"})
    call(world, "alice", "submit_release", release_id=older.id)
    newer = deploy(world, "alice", "shop", "prod", web={"image_tag": "9.1"})
    with head_watch(world) as seen:
        # supersedes `older`: two releases moved, three chain events, two live events
        submitted = call(world, "alice", "submit_release", release_id=newer.id)
    assert submitted.lifecycle_state == "pending_approval"
    # One statement under the lock, sent with the COMMIT: when SQLAlchemy's own COMMIT comes,
    # the transaction is over and the head free. Before: the events, the head, the outbox
    # and the NOTIFY went one round trip each under the lock, then the COMMIT.
    assert seen["under"] == ["WITH linked AS"], seen
    assert seen["at_commit"] == [("idle", False)], seen
    with world.services.sessions() as session:
        assert verify(session).ok
    assert call(world, "alice", "get_release", release_id=older.id).lifecycle_state == "cancelled"


def test_a_decision_and_a_preview_hold_it_for_one_round_trip_too(pg_world: World) -> None:
    world = pg_world
    with head_watch(world) as seen:
        release = deploy(world, "alice", "shop", "prod", web={"image_tag": "9.2"})
        call(world, "alice", "submit_release", release_id=release.id)
        decided = call(world, "bob", "approve_release", release_id=release.id)
    assert decided.lifecycle_state in {"approved", "applying", "applied"}
    # every transaction that linked events wrote them in one statement with its COMMIT
    assert seen["under"] and set(seen["under"]) == {"WITH linked AS"}, seen
    assert seen["at_commit"] == [("idle", False)] * len(seen["under"]), seen
    with world.services.sessions() as session:
        assert verify(session).ok


def test_a_failed_chain_write_rolls_the_whole_transaction_back(pg_world: World) -> None:
    """The write that goes with the COMMIT fails as any statement does: SQLAlchemy's error
    (so a deadlock is retried by `core.db.retrying`), and nothing of the transaction stays."""
    world = pg_world
    deploy(world, "alice", "shop", "dev", web={"image_tag": "1.0"})
    with world.services.sessions() as session:
        head = session.scalars(select(AuditHead)).one()
        last, releases = head.last_seq, session.query(Release).count()
    # An outside hand moves the head back one link: the next event's seq is taken.
    sql(world, "UPDATE audit_head SET last_seq = last_seq - 1")
    with pytest.raises(IntegrityError):
        deploy(world, "alice", "shop", "dev", web={"image_tag": "1.1"})
    with world.services.sessions() as session:
        assert session.query(Release).count() == releases
        assert session.scalars(select(AuditHead)).one().last_seq == last - 1
    sql(world, "UPDATE audit_head SET last_seq = :n", n=last)
    deploy(world, "alice", "shop", "dev", web={"image_tag": "1.2"})  # and writing goes on
    with world.services.sessions() as session:
        assert session.query(Release).count() == releases + 1
