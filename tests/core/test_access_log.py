"""The access log: reads are queued and written in batches, never inside the request."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select, text, update

from core.audit.access import AccessLog
from core.audit.access_reads import PRUNED, list_access, prune_access
from core.audit.models import AccessRecord, AuditEvent
from core.db import utcnow
from core.errors import PermissionDenied
from core.migrate import upgrade
from tests.conftest import World
from tests.support.calls import call

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "🚀" + "x" * 9_998 + "🔥"


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(AccessRecord)) or 0)


@contextmanager
def long_write(engine: Engine) -> Iterator[None]:
    """Another connection holding a write transaction (SQLite: the write lock; PostgreSQL: a
    lock on the access log itself, so any inline insert of a read record would wait)."""
    connection = engine.raw_connection()
    cursor = connection.cursor()
    try:
        if engine.dialect.name == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        else:
            cursor.execute("LOCK TABLE audit_access_log IN EXCLUSIVE MODE")
        cursor.execute("UPDATE projects SET name = name")
        yield
    finally:
        connection.rollback()
        connection.close()


def test_a_read_answers_while_a_long_write_holds_the_lock(world: World) -> None:
    engine = world.services.engine
    before = _count(engine)
    done = threading.Event()
    answers: list[Any] = []

    def read() -> None:
        answers.append(call(world, "bob", "list_releases", project="shop"))
        done.set()

    with long_write(engine):
        threading.Thread(target=read, daemon=True).start()
        # before: the read's own insert + commit waited for the writer (30 s busy timeout)
        assert done.wait(5), "a read waited behind a long write"
    assert answers and answers[0].items == []
    assert world.services.access.flush()
    assert _count(engine) == before + 1


def test_records_land_after_flush_clipped_in_one_batch(world: World) -> None:
    access = world.services.access
    actor = world.actor("bob")
    hostile = actor.via(actor.channel, request_id="r" * 10_000)
    for _ in range(3):
        assert access.record(actor=hostile, tool="t" * 500, project=HOSTILE, args=HOSTILE)
    assert access.flush()
    with world.services.reads() as session:
        page = list_access(session, actor=world.actor("admin"), limit=3)
    assert len(page.items) == 3
    row = page.items[0]
    assert row.actor == "bob" and row.project is None  # a 10,000-char "project" is no project
    assert (
        len(row.args) <= 2000 and row.args.startswith("🚀x") and "more characters cut" in row.args
    )
    assert len(row.tool) <= 64 and row.request_id is not None and len(row.request_id) <= 64


def test_a_full_queue_drops_with_a_count_and_a_warning(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # a tick so long it never comes: the records stay queued until flush
    access = AccessLog(world.services.engine, interval=3600, batch_size=1000, capacity=3)
    actor = world.actor("bob")
    with caplog.at_level(logging.WARNING, logger="shipdeck.audit.access"):
        kept = [access.record(actor=actor, tool="list_releases", project=None, args="{}")]
        kept += [access.record(actor=actor, tool="list_releases", project=None, args="{}")]
        kept += [access.record(actor=actor, tool="list_releases", project=None, args="{}")]
        kept += [access.record(actor=actor, tool="list_releases", project=None, args="{}")]
    assert kept == [True, True, True, False]
    assert "queue full" in caplog.text
    assert access.flush()
    access.close()
    stats = access.stats()
    assert (stats.written, stats.dropped, stats.lost, stats.queued) == (3, 1, 0, 0)


def test_a_failing_flush_is_retried_then_counted_never_raised(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = create_engine(f"sqlite:///{tmp_path / 'no-tables.db'}")  # no access log table
    access = AccessLog(nowhere, retries=2)
    with caplog.at_level(logging.ERROR, logger="shipdeck.audit.access"):
        assert access.record(actor=world.actor("bob"), tool="get_release", project=None, args="")
        assert access.flush()  # settled: counted lost, not raised
    access.close()
    assert access.stats().lost == 1 and access.stats().written == 0
    assert "1 read records lost after 2 attempts" in caplog.text
    nowhere.dispose()


def test_admins_page_and_filter_the_access_log(world: World) -> None:
    for user, project in (("bob", "shop"), ("alice", "shop"), ("admin", "payment")):
        call(world, user, "list_releases", project=project)
    call(world, "bob", "list_targets")
    assert world.services.access.flush()
    admin = world.actor("admin")
    with world.services.reads() as session:
        bobs = list_access(session, actor=admin, user="bob", limit=1)
        rest = list_access(session, actor=admin, user="bob", before=bobs.next_before)
        shop = list_access(session, actor=admin, project="shop", tool="list_releases")
        future = list_access(session, actor=admin, since=utcnow() + timedelta(hours=1))
        with pytest.raises(PermissionDenied):
            list_access(session, actor=world.actor("bob"))
    assert [r.tool for r in bobs.items] == ["list_targets"]
    assert bobs.next_before is not None and rest.next_before is None
    assert [(r.tool, r.project) for r in rest.items] == [("list_releases", "shop")]
    assert [r.actor for r in shop.items] == ["alice", "bob"]
    assert future.items == []


def test_prune_deletes_old_records_and_is_a_chain_event(world: World) -> None:
    call(world, "bob", "list_releases", project="shop")
    call(world, "bob", "list_targets")
    assert world.services.access.flush()
    with world.services.sessions() as session:
        old = utcnow() - timedelta(days=100)
        session.execute(
            update(AccessRecord).where(AccessRecord.tool == "list_releases").values(at=old)
        )
        session.commit()
        with pytest.raises(PermissionDenied):
            prune_access(session, actor=world.actor("bob"), before=utcnow())
        session.rollback()
        result = prune_access(
            session, actor=world.actor("admin"), before=utcnow() - timedelta(days=90)
        )
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == PRUNED)).one()
        left = session.scalars(select(AccessRecord.tool)).all()
    assert result.deleted == 1 and left == ["list_targets"]
    assert event.actor == "admin" and event.data["deleted"] == 1
    assert call(world, "admin", "verify_audit").ok


def test_a_killed_process_loses_at_most_its_unflushed_reads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    engine = create_engine(url)
    upgrade(engine)
    script = (
        "import os, signal\n"
        "from sqlalchemy import create_engine\n"
        "from core.audit.access import AccessLog\n"
        "from core.permissions import Actor\n"
        f"access = AccessLog(create_engine({url!r}), interval=3600)\n"
        "actor = Actor(None, 'bob')\n"
        "for _ in range(5): access.record(actor=actor, tool='get_release', project=None, args='')\n"
        "assert access.flush()\n"
        "for _ in range(3): access.record(actor=actor, tool='get_release', project=None, args='')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, timeout=60, check=False
    )
    assert done.returncode == -9
    assert _count(engine) == 5  # the 3 queued after the last flush were the window lost
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_events")).scalar() == 0
    engine.dispose()
