"""PostgreSQL races made on purpose: hold a thread at a statement, take locks against it.

An outside transaction takes a lock the thread will want, lets it go on until it waits,
then asks for a lock the thread holds: a deadlock. The outside transaction's long
deadlock_timeout leaves the thread to notice it, and be rolled back (SQLSTATE 40P01).
Holding a thread uses SQLAlchemy's statement event: nothing of the product is replaced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, text

from core.db import sqlstate
from core.ids import parse_release_id
from tests.conftest import World
from tests.support import engine_events

WORKER = "background-under-test"


@contextmanager
def paused_at(
    world: World, matches: Callable[[str, Any], bool], thread: str = WORKER
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold a thread (by name) just before the first statement `matches` accepts."""
    reached, go = threading.Event(), threading.Event()

    def before(_c: Connection, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if threading.current_thread().name != thread or reached.is_set():
            return
        if matches(statement, parameters):
            reached.set()
            go.wait(30)

    engine = world.services.engine
    engine_events.listen(engine, "before_cursor_execute", before)
    try:
        yield reached, go
    finally:
        go.set()
        engine_events.remove(engine, "before_cursor_execute", before)


def lock_waiters(watcher: Connection, blocker: int | None = None) -> int:
    """How many backends of this database wait for a lock now (for one `blocker`'s, if given)."""
    watcher.rollback()  # a fresh snapshot of pg_stat_activity each poll
    if blocker is not None:
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE :b = ANY(pg_blocking_pids(pid))"
        )
        return int(watcher.execute(waiting, {"b": blocker}).scalar() or 0)
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )
    return int(watcher.execute(waiting).scalar() or 0)


def deadlocked_moving(
    world: World, rid: str, state: str, work: Callable[[], Any]
) -> dict[str, Any]:
    """Run `work` in a worker; when it moves release `rid` to `state`, make that transaction
    lose a deadlock (audit head, then the release row). Returns the worker's value or error."""
    box: dict[str, Any] = {}
    committed = threading.Event()
    with (
        paused_at(world, moving_release_to(state)) as (reached, go),
        held_after_losing(world, committed),
    ):
        worker = in_worker(work, box)
        assert reached.wait(30), f"the worker never moved {rid} to {state}"
        deadlock_against(world, go, head_first, release_row(parse_release_id(rid)))
        committed.set()
        worker.join(30)
    return box


@contextmanager
def held_after_losing(
    world: World, until: threading.Event, thread: str = WORKER
) -> Iterator[threading.Event]:
    """Once a thread (by name) lost a deadlock, hold its next statements until `until` is set.

    PostgreSQL does not always hand a freed row to the transaction that waited for it: the
    loser's immediate retry can lock the row first and deadlock with the same winner again.
    Held until the winner committed, the retry meets one deadlock, the one the test made.
    """
    lost = threading.Event()

    def on_error(context: Any) -> None:
        if threading.current_thread().name == thread:
            if sqlstate(context.original_exception) == "40P01":
                lost.set()

    def before(*_: Any) -> None:
        if threading.current_thread().name == thread and lost.is_set():
            until.wait(30)

    engine = world.services.engine
    engine_events.listen(engine, "handle_error", on_error)
    engine_events.listen(engine, "before_cursor_execute", before)
    try:
        yield lost
    finally:
        engine_events.remove(engine, "before_cursor_execute", before)
        engine_events.remove(engine, "handle_error", on_error)


def moving_release_to(state: str) -> Callable[[str, Any], bool]:
    """Matches the UPDATE that moves a release to `state` (a `paused_at` condition)."""

    def matches(statement: str, parameters: Any) -> bool:
        # a transition's compare-and-set binds the new state as `new_lifecycle_state`
        return statement.lstrip().startswith("UPDATE releases") and (
            isinstance(parameters, dict) and parameters.get("new_lifecycle_state") == state
        )

    return matches


def release_row(number: int) -> Callable[[Connection], Any]:
    """Lock release `number`'s row (a `deadlock_against` step)."""
    return lambda outside: outside.execute(
        text("SELECT number FROM releases WHERE number = :n FOR UPDATE"), {"n": number}
    )


def head_first(outside: Connection) -> None:
    """The audit chain's head: the lock every writer takes last, at commit."""
    outside.execute(text("SELECT last_seq FROM audit_head FOR UPDATE"))


def deadlock_against(
    world: World,
    go: threading.Event,
    first: Callable[[Connection], Any],
    then: Callable[[Connection], Any],
) -> None:
    """Take a lock the worker will want (`first`), let the worker go on until it waits for
    it, then take one the worker holds (`then`): a deadlock the worker loses."""
    engine = world.services.engine
    with engine.connect() as outside, engine.connect() as watcher:
        outside.execute(text("SET LOCAL deadlock_timeout = '30s'"))
        first(outside)
        me = int(outside.execute(text("SELECT pg_backend_pid()")).scalar_one())
        go.set()
        deadline = time.monotonic() + 20
        while not lock_waiters(watcher, me):  # the worker, not some other thread, waits for us
            assert time.monotonic() < deadline, "the worker never waited for our lock"
        then(outside)  # returns once the worker was rolled back
        outside.commit()


def in_worker(fn: Callable[[], Any], box: dict[str, Any]) -> threading.Thread:
    """Run `fn` in a thread named WORKER; its value or error lands in `box`."""

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name=WORKER)
    thread.start()
    return thread
