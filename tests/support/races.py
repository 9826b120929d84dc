"""Two writers made to read before either writes, on PostgreSQL and on SQLite, without sleeps.

A third connection holds the lock the writers' first write needs (PostgreSQL: a SHARE lock on
that table, which reads pass and writes wait for; SQLite: the write lock itself). The writers
start, and once both wait (for that lock, or for each other) it is released.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from api.wiring import Services
from core.sqlite_gate import gate_for
from tests.support import engine_events
from tests.support.pg_locks import lock_waiters


def until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Poll `condition` (every 2 ms) until it holds; fail saying `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        threading.Event().wait(0.002)


@contextmanager
def first_write_held(services: Services, table: str, writers: int) -> Iterator[None]:
    """Hold `table`'s writers until `writers` threads wait; release them as the block ends."""
    engine = services.engine
    with engine.connect() as holder, engine.connect() as watcher:
        if engine.dialect.name == "postgresql":
            holder.execute(text(f"LOCK TABLE {table} IN SHARE MODE"))
            yield
            # Each writer waits for our lock, or for the other writer (which waits for ours).
            until(lambda: lock_waiters(watcher) >= writers, "the writers never both waited")
        else:
            gate = gate_for(str(Path(str(engine.url.database)).resolve()))
            holder.begin()
            holder.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock is ours
            yield
            until(lambda: gate.waiting >= writers, "the writers never both queued")
        holder.rollback()


def race(services: Services, table: str, *writers: Callable[[], Any]) -> list[Any]:
    """Run `writers` at once, each in its own thread, all held at `table`'s first write; what
    each returned, or the exception it raised."""
    results: list[Any] = [None] * len(writers)

    def run(i: int) -> None:
        try:
            results[i] = writers[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [
        threading.Thread(target=run, args=(i,), name=f"writer-{i}") for i in range(len(writers))
    ]
    with first_write_held(services, table, len(threads)):
        for thread in threads:
            thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "a writer never finished"
    return results


def _waiting(services: Services, watcher: Connection) -> int:
    """How many writers wait now: for a PostgreSQL lock, or for SQLite's write turn."""
    engine = services.engine
    if engine.dialect.name == "postgresql":
        return lock_waiters(watcher)
    return gate_for(str(Path(str(engine.url.database)).resolve())).waiting


def one_loses(
    services: Services, table: str, loser: Callable[[], Any], winner: Callable[[], Any]
) -> list[Any]:
    """`loser` reads, and is held right before its first write to `table`; `winner` runs
    until it finishes or waits (for a lock `loser` holds); then `loser` goes on. What each
    returned (loser's first), or the exception it raised.

    Holding uses SQLAlchemy's statement event, by thread name: nothing of the product is
    replaced. Without a lock between them, the winner writes first and the loser is made to
    lose whatever the scheduler would have chosen.
    """
    writes = re.compile(rf"^\s*(INSERT INTO|UPDATE|DELETE FROM) {table}\b")
    reached, go = threading.Event(), threading.Event()

    def before(_c: Connection, _cur: Any, statement: str, *_: Any) -> None:
        if threading.current_thread().name == "loser" and not reached.is_set():
            if writes.match(statement):
                reached.set()
                go.wait(30)

    results: list[Any] = [None, None]

    def run(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = fn()
        except BaseException as exc:
            results[i] = exc

    engine = services.engine
    engine_events.listen(engine, "before_cursor_execute", before)
    threads = [
        threading.Thread(target=run, args=(0, loser), name="loser"),
        threading.Thread(target=run, args=(1, winner), name="winner"),
    ]
    try:
        with engine.connect() as watcher:
            threads[0].start()
            until(reached.is_set, f"the loser never came to write {table}")
            threads[1].start()
            until(
                lambda: not threads[1].is_alive() or _waiting(services, watcher) >= 1,
                "the winner neither finished nor waited",
            )
    finally:
        go.set()
        for thread in threads:
            thread.join(30)
        engine_events.remove(engine, "before_cursor_execute", before)
    assert not any(t.is_alive() for t in threads), "a writer never finished"
    return results
