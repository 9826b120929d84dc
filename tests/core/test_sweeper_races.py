"""The sweeper and a person decide the same waiting release at the same time: one wins.

The sweeper scans without locks, then expires each release it found in a write transaction
of its own. A decision may land in between: it must win (the sweeper stands back and says
so in its log), and a sweeper that expired first leaves the decision a clear 409.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, select, text
from sqlalchemy.orm import Session, SessionTransaction

from core.approvals.models import ApprovalTicket
from core.db import SQLITE_BEGIN, engines, utcnow
from core.errors import Conflict
from core.flows.expiry import ExpirySweep
from core.ids import parse_release_id
from core.releases.models import Release
from tests.conftest import World, build_world
from tests.support.calls import approved_dev, call, deploy, sql
from tests.support.pg_locks import lock_waiters

SWEEPER = "sweeper-under-test"


def _overdue(world: World, tag: str = "1.5.0") -> str:
    """alice's shop/prod release, submitted; its ticket has waited 73 hours."""
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": tag})
    call(world, "alice", "submit_release", release_id=release.id)
    sql(
        world,
        "UPDATE approval_tickets SET created_at = :t WHERE release_number = :n",
        t=(utcnow() - timedelta(hours=73)).replace(tzinfo=None).isoformat(sep=" "),
        n=parse_release_id(release.id),
    )
    return str(release.id)


def _states(world: World, rid: str) -> tuple[str, str]:
    number = parse_release_id(rid)
    with world.services.sessions() as session:
        release = session.scalars(select(Release).where(Release.number == number)).one()
        ticket = session.scalars(
            select(ApprovalTicket.state).where(ApprovalTicket.release_number == number)
        ).one()
        return release.lifecycle_state, ticket


def _sweep(world: World, box: dict[str, Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            with world.services.sessions() as session:
                box["count"] = ExpirySweep().run(session)
        except BaseException as exc:
            box["error"] = exc

    return run


@contextmanager
def paused_before_writing(world: World) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold the sweeper thread as its first write transaction (after its scan) is created,
    before it touches a connection: on SQLite before its turn at the write lock and BEGIN
    IMMEDIATE, on PostgreSQL before its first read or lock. So it holds no lock while it waits.
    """
    reached, go = threading.Event(), threading.Event()

    def before(session: Session, transaction: SessionTransaction) -> None:
        if threading.current_thread().name != SWEEPER or transaction.parent is not None:
            return
        bind = session.get_bind()  # the scan reads on read_engine: the autocommit twin on
        # PostgreSQL, no BEGIN on SQLite
        reading = bind in engines(world.services.engine)[1:] or (
            bind.get_execution_options().get(SQLITE_BEGIN) == "NONE"
        )
        if reading or reached.is_set():
            return
        reached.set()
        go.wait(30)

    event.listen(Session, "after_transaction_create", before)
    try:
        yield reached, go
    finally:
        go.set()
        event.remove(Session, "after_transaction_create", before)


@pytest.mark.parametrize(
    ("user", "tool", "settled"),
    [
        ("bob", "approve_release", ("approved", "approved")),
        ("dave", "reject_release", ("rejected", "rejected")),
    ],
)
def test_a_decision_between_the_scan_and_the_expiry_wins(
    world: World, caplog: pytest.LogCaptureFixture, user: str, tool: str, settled: tuple[str, str]
) -> None:
    caplog.set_level(logging.INFO)
    rid = _overdue(world)
    box: dict[str, Any] = {}
    sweeper = threading.Thread(target=_sweep(world, box), name=SWEEPER)
    with paused_before_writing(world) as (reached, go):
        sweeper.start()
        assert reached.wait(30), "the sweeper never began its write"
        # the scan saw the ticket open and overdue; the person decides now
        call(world, user, tool, release_id=rid)
        go.set()
        sweeper.join(30)
    assert "error" not in box, box
    assert box["count"] == 0
    assert _states(world, rid) == settled
    stood_back = [
        r.getMessage() for r in caplog.records if "not expired by the sweeper" in r.getMessage()
    ]
    assert stood_back and rid in stood_back[0], caplog.text
    assert call(world, "admin", "verify_audit").ok


@pytest.mark.parametrize(
    ("tool", "settled"),
    [("apply_release", "applied"), ("repreview_release", "approved")],
)
def test_an_apply_or_repreview_between_the_scan_and_a_preview_expiry_wins(
    world: World, caplog: pytest.LogCaptureFixture, tool: str, settled: str
) -> None:
    """The preview-TTL expiry of an approved release against its requester acting on it."""
    caplog.set_level(logging.INFO)
    rid = approved_dev(world)
    sql(
        world,
        "UPDATE previews SET expires_at = :t WHERE release_number = :n",
        t=(utcnow() - timedelta(seconds=5)).replace(tzinfo=None).isoformat(sep=" "),
        n=parse_release_id(rid),
    )
    box: dict[str, Any] = {}
    sweeper = threading.Thread(target=_sweep(world, box), name=SWEEPER)
    with paused_before_writing(world) as (reached, go):
        sweeper.start()
        assert reached.wait(30), "the sweeper never began its write"
        call(world, "alice", tool, release_id=rid)  # re-previews the stale preview first
        go.set()
        sweeper.join(30)
    assert "error" not in box, box
    assert box["count"] == 0
    assert call(world, "alice", "get_release", release_id=rid).lifecycle_state == settled
    assert any(
        "not expired by the sweeper" in r.getMessage() and rid in r.getMessage()
        for r in caplog.records
    ), caplog.text
    assert call(world, "admin", "verify_audit").ok


def test_an_expiry_first_leaves_the_decision_a_clear_conflict(world: World) -> None:
    rid = _overdue(world)
    with world.services.sessions() as session:
        assert ExpirySweep().run(session) == 1
    with pytest.raises(Conflict) as lost:
        call(world, "bob", "approve_release", release_id=rid)
    assert lost.value.details["current_state"] == "expired"
    assert rid in lost.value.message
    assert _states(world, rid) == ("expired", "expired")
    assert call(world, "admin", "verify_audit").ok


# ------------------------------------------------------------------ PostgreSQL, real row locks


@pytest.fixture
def pg_world(pg_services: Any) -> World:
    return build_world(pg_services)


def _until_waiting(watcher: Connection, count: int, what: str) -> None:
    deadline = time.monotonic() + 20
    while lock_waiters(watcher) < count:
        assert time.monotonic() < deadline, what


@pytest.mark.postgres
@pytest.mark.parametrize("first", ["sweeper", "approval"])
def test_sweeper_and_approval_queue_on_the_release_row(
    pg_world: World, caplog: pytest.LogCaptureFixture, first: str
) -> None:
    """Both wait on the release row an outside transaction holds; the first in line wins."""
    caplog.set_level(logging.INFO)
    rid = _overdue(pg_world)
    swept: dict[str, Any] = {}
    decided: dict[str, Any] = {}

    def approve() -> None:
        try:
            decided["state"] = call(
                pg_world, "bob", "approve_release", release_id=rid
            ).lifecycle_state
        except BaseException as exc:
            decided["error"] = exc

    threads = {
        "sweeper": threading.Thread(target=_sweep(pg_world, swept), name=SWEEPER),
        "approval": threading.Thread(target=approve),
    }
    order = [first, *(name for name in threads if name != first)]
    engine = pg_world.services.engine
    with engine.connect() as outside, engine.connect() as watcher:
        outside.execute(
            text("SELECT number FROM releases WHERE number = :n FOR UPDATE"),
            {"n": parse_release_id(rid)},
        )
        for queued, name in enumerate(order, start=1):
            threads[name].start()
            _until_waiting(watcher, queued, f"{name} never queued")
        outside.commit()
        for thread in threads.values():
            thread.join(30)
    assert "error" not in swept, swept
    if first == "sweeper":
        assert swept["count"] == 1
        assert isinstance(decided.get("error"), Conflict), decided
        assert decided["error"].details["current_state"] == "expired"
        assert _states(pg_world, rid) == ("expired", "expired")
    else:
        assert decided == {"state": "approved"}
        assert swept["count"] == 0
        assert _states(pg_world, rid) == ("approved", "approved")
        assert any(
            "not expired by the sweeper" in r.getMessage() and rid in r.getMessage()
            for r in caplog.records
        ), caplog.text
    assert call(pg_world, "admin", "verify_audit").ok
