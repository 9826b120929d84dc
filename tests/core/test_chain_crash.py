"""A process killed at the audit chain's last write leaves all of its transaction or none.

On PostgreSQL a transaction's events and the head's move are one statement, sent with the
COMMIT in one pipeline round trip (core/audit/chain.py). A replica (a process of its own)
applies a release through the tools and is SIGKILLed there, held at the exact point from the
database's side (nothing in it is patched):

- waiting for the head row, which an outside transaction holds: the release's move to
  `applying` and its live event are written, the chain write and the COMMIT never sent;
- with the chain write on the server (it waits for a table lock held outside) and the
  server checking for dead clients (`client_connection_check_interval`): the server ends the
  backend before it reaches the COMMIT;
- with the COMMIT written on the server and its acknowledgement never read: the commit waits
  for a synchronous standby that does not exist, and completes after the process died.

Each time a fresh session finds the release, its events, the head and the live outbox in
agreement (the first two: as they were; the last: all of it), `verify` passes, no lock is
left, the head takes the next write, and a release the dead replica left `applying` is
taken over by the sweeper once its lease runs out and ends `applied`, audited once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select, text

from core.audit.models import AuditEvent, AuditHead
from core.audit.service import verify
from core.live import LiveOutbox
from core.releases.models import Release
from tests.conftest import World, build_world, service_unavailable
from tests.support.calls import approved_dev, call, deploy

ROOT = Path(__file__).resolve().parents[2]
WRITTEN = {"releases", "live_outbox", "audit_events", "audit_head"}


@dataclass
class Hold:
    """Where the child is held: libpq options for its sessions, the pg_stat_activity test its
    backend passes when it got there, which of `WRITTEN` its open transaction then holds for
    writing, and what lets the backend go on once the child is dead."""

    options: str
    waits: str
    writing: set[str]
    let_go: Callable[[], None] = lambda: None


@dataclass
class Stand:
    """What a fresh session sees of one release and the chain."""

    state: str
    claimed: bool
    actions: list[str]  # the release's audit events, in order
    head_seq: int
    last_seq: int
    outbox: int  # live events of the release in `applying` written since the test began


def _stand(world: World, number: int, since: int) -> Stand:
    with world.services.sessions() as session:
        release = session.get(Release, number)
        assert release is not None
        head = session.scalars(select(AuditHead)).one()
        actions = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.release_number == number)
            .order_by(AuditEvent.seq)
        ).all()
        outbox = [
            p
            for p in session.scalars(select(LiveOutbox.payload).where(LiveOutbox.id > since))
            if p["release_id"] == f"R-{number}" and p["lifecycle_state"] == "applying"
        ]
        return Stand(
            state=release.lifecycle_state,
            claimed=release.claimed_by is not None,
            actions=list(actions),
            head_seq=head.last_seq,
            last_seq=int(session.scalar(select(func.max(AuditEvent.seq))) or 0),
            outbox=len(outbox),
        )


def _until(done: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll a database state (10 ms apart) until it holds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        threading.Event().wait(0.01)


@contextmanager
def _head_held(engine: Engine) -> Iterator[Hold]:
    with engine.connect() as outside:
        outside.execute(text("SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE"))
        yield Hold(
            options="",
            waits="wait_event_type = 'Lock' AND query LIKE 'SELECT audit_head.%FOR UPDATE'",
            writing={"releases", "live_outbox"},  # the move to `applying` and its live event
            let_go=outside.rollback,
        )
        outside.rollback()


@contextmanager
def _write_held(engine: Engine) -> Iterator[Hold]:
    # SHARE lets the child lock the head row (FOR UPDATE takes ROW SHARE) but not write it.
    with engine.connect() as outside:
        outside.execute(text("LOCK TABLE audit_head IN SHARE MODE"))
        yield Hold(
            options="-c client_connection_check_interval=20",
            waits="wait_event_type = 'Lock' AND query LIKE 'WITH linked AS%'",
            # the statement holds the events' table and waits for the head's: a statement
            # takes its tables' locks before it runs, so it has written nothing yet
            writing={"releases", "live_outbox", "audit_events"},
        )
        outside.rollback()  # after the server ended the dead child's backend


@contextmanager
def _commit_held(engine: Engine) -> Iterator[Hold]:
    admin = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    superuser = admin.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    if not superuser.scalar():
        admin.close()
        service_unavailable("a PostgreSQL superuser (to name a synchronous standby)")

    def standby(name: str | None) -> None:
        if name is None:
            admin.execute(text("ALTER SYSTEM RESET synchronous_standby_names"))
        else:
            admin.execute(text(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'"))
        admin.execute(text("SELECT pg_reload_conf()"))

    standby("shipdeck_no_such_standby")
    try:
        _until_commits_wait(engine, admin)
        yield Hold(
            options="-c synchronous_commit=on",  # only the child's commits wait
            waits="wait_event = 'SyncRep'",
            writing=WRITTEN,
            let_go=lambda: standby(None),
        )
    finally:
        standby(None)
        admin.close()


def _until_commits_wait(engine: Engine, admin: Connection) -> None:
    """Until a commit asking for a synchronous standby waits for one: the checkpointer, which
    holds and frees such commits, has read the setting (it reloads on its own time)."""
    with engine.connect() as probe:
        pid = probe.execute(text("SELECT pg_backend_pid()")).scalar()
        probe.commit()

        def commit(committed: threading.Event) -> None:
            probe.execute(text("SET LOCAL synchronous_commit = on"))
            # a transactional WAL record: a commit that wrote nothing never waits
            probe.execute(text("SELECT pg_logical_emit_message(true, 'shipdeck', 'probe')"))
            probe.commit()
            committed.set()

        waits = text("SELECT wait_event FROM pg_stat_activity WHERE pid = :p")
        for _ in range(500):
            committed = threading.Event()
            worker = threading.Thread(target=commit, args=(committed,))
            worker.start()
            while not committed.wait(0.005):
                if admin.execute(waits, {"p": pid}).scalar() == "SyncRep":
                    # cancelled, the wait ends; the transaction stays committed
                    admin.execute(text("SELECT pg_cancel_backend(:p)"), {"p": pid})
                    worker.join()
                    return
            worker.join()  # committed without waiting: the setting is not read yet
    raise AssertionError("commits never waited for the synchronous standby")


HOLDS = {
    "waiting_for_the_head": (_head_held, False),
    "chain_write_sent_then_dropped_by_the_server": (_write_held, False),
    "commit_written_acknowledgement_never_read": (_commit_held, True),
}


def _spawn(world: World, release: str, options: str) -> tuple[subprocess.Popen[bytes], str]:
    name = f"shipdeck-crash-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PGAPPNAME": name,
        "PGOPTIONS": options,
        "SHIPDECK_APPLY_LEASE_SECONDS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    url = world.services.engine.url.render_as_string(hide_password=False)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.child_apply", url, "alice", release],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return child, name


def _held_backend(
    watcher: Connection, child: subprocess.Popen[bytes], name: str, waits: str
) -> int:
    """The child's backend, once it passes `waits`; fails if the child ends first."""
    query = text(f"SELECT pid FROM pg_stat_activity WHERE application_name = :n AND {waits}")
    deadline = time.monotonic() + 30
    while (pid := watcher.execute(query, {"n": name}).scalar()) is None:
        try:
            child.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            if time.monotonic() < deadline:
                continue
            doing = watcher.execute(
                text(
                    "SELECT state, wait_event, left(query, 80) FROM pg_stat_activity "
                    "WHERE application_name = :n"
                ),
                {"n": name},
            ).all()
            raise AssertionError(f"the child never got to the held point: {doing}") from None
        out, err = child.communicate()
        raise AssertionError(f"the child ended before the held point: {out!r} {err[-3000:]!r}")
    return int(pid)


def _locks(watcher: Connection, pid: int) -> set[tuple[str, str]]:
    rows = watcher.execute(
        text(
            "SELECT relation::regclass::text, mode FROM pg_locks "
            "WHERE pid = :p AND locktype = 'relation' AND granted"
        ),
        {"p": pid},
    )
    return {(r[0], r[1]) for r in rows}


def _alive(watcher: Connection, pid: int) -> bool:
    query = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p")
    return bool(watcher.execute(query, {"p": pid}).scalar())


@pytest.fixture
def pg_world(pg_services: Any) -> World:
    return build_world(pg_services)


@pytest.mark.parametrize("hold", list(HOLDS))
def test_a_process_killed_at_the_chain_write_leaves_all_or_nothing(
    pg_world: World, hold: str
) -> None:
    world = pg_world
    engine = world.services.engine
    release = approved_dev(world)
    number = int(release.removeprefix("R-"))
    with world.services.sessions() as session:  # the outbox outlives the wipe between tests
        since = session.scalar(select(func.max(LiveOutbox.id))) or 0
    before = _stand(world, number, since)
    assert before.state == "approved" and before.head_seq == before.last_seq
    held_at, committed = HOLDS[hold]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
        with held_at(engine) as held:
            child, name = _spawn(world, release, held.options)
            try:
                pid = _held_backend(watcher, child, name, held.waits)
                locks = _locks(watcher, pid)  # what its open transaction has written
                child.send_signal(signal.SIGKILL)
                assert child.wait(timeout=30) == -signal.SIGKILL
                held.let_go()
                _until(lambda: not _alive(watcher, pid), "the dead child's backend ended")
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        assert not _locks(watcher, pid)

    # One transaction: the release's move, its chain event, the head's move and its live
    # event are there together, or none of them is.
    after = _stand(world, number, since)
    if committed:
        assert after.state == "applying" and after.claimed
        assert after.actions == [*before.actions, "apply"]
        assert after.head_seq == after.last_seq == before.last_seq + 1
        assert before.outbox == 0 and after.outbox == 1
    else:
        assert after == before
    with world.services.sessions() as session:
        verdict = verify(session)
        assert verdict.ok, verdict.reason
    # No lock outlived the process: the head and the release row are free at once.
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL lock_timeout = '1ms'"))
        connection.execute(text("SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE NOWAIT"))
        connection.execute(
            text("SELECT 1 FROM releases WHERE number = :n FOR UPDATE NOWAIT"), {"n": number}
        )

    if committed:
        # The dead replica's claim lapses on the database's clock; the sweeper of a live
        # one then takes the job over and ends it.
        with engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_sleep(GREATEST(0, EXTRACT(EPOCH FROM lease_expires_at "
                    "- clock_timestamp())) + 0.01) FROM releases WHERE number = :n"
                ),
                {"n": number},
            )
        world.services.runner.sweep()
    else:
        call(world, "alice", "apply_release", release_id=release)
    final = _stand(world, number, since)
    assert final.state == "applied" and not final.claimed
    assert final.actions == [*before.actions, "apply", "applied"]
    assert final.head_seq == final.last_seq
    # ... and the chain goes on from where the kill left it
    deploy(world, "alice", "shop", "staging", web={"image_tag": "2.0.0"})
    with world.services.sessions() as session:
        verdict = verify(session)
        assert verdict.ok, verdict.reason

    # The kill cut the apply's transaction where this case means to.
    assert {t for t, mode in locks if mode == "RowExclusiveLock" and t in WRITTEN} == held.writing
