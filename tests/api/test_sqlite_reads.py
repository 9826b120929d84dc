"""SQLite: reads never wait for the write lock. While another connection holds a write
transaction open (a long `shipdeck load`, say), authentication, `/me` and a read list still
answer at once; writes still serialise."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from core.db import make_engine
from tests.api.conftest import Api
from tests.conftest import World
from tests.support import engine_events


def _answer_within(api: Api, path: str, user: str, seconds: float) -> Any:
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(api.get(path, user=user)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"GET {path} did not answer within {seconds}s while a writer held the lock"
    return result[0]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_reads_answer_while_a_writer_holds_the_lock(api: Api, world: World) -> None:
    path = world.services.engine.url.database
    assert path
    writer = sqlite3.connect(path, isolation_level=None, timeout=30)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO users (name, created_at) VALUES ('uncommitted', '2026-01-01')")
    try:
        started = time.monotonic()
        me = _answer_within(api, "/api/v1/me", "alice", 5)
        assert me.status_code == 200 and me.json()["name"] == "alice"
        tokens = _answer_within(api, "/api/v1/tokens", "admin", 5)
        assert tokens.status_code == 200
        assert "uncommitted" not in {t["user"] for t in tokens.json()["items"]}
        elapsed = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert elapsed < 5


def test_file_databases_pool_connections_and_reads_begin_no_transaction(tmp_path: Any) -> None:
    from sqlalchemy import text

    from core.db import read_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'pool.db'}")
    statements: list[str] = []
    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    with read_engine(engine).connect() as connection:
        connection.execute(text("SELECT count(*) FROM t"))
        connection.rollback()
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
    assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]  # kept, not closed
    engine.dispose()


class HeldAtCheckout:
    """Holds every request thread at its connection checkout until released, counting them."""

    def __init__(self) -> None:
        self.inside = 0
        self.changed = threading.Condition()
        self.release = threading.Event()

    def checkout(self, *args: Any) -> None:
        # request threads only: the access log writer and the sweeper have threads of their own
        if not threading.current_thread().name.startswith("AnyIO worker"):
            return
        with self.changed:
            self.inside += 1
            self.changed.notify_all()
        self.release.wait(30)
        with self.changed:
            self.inside -= 1
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool]) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout=10)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_reads_take_turns_and_live_reads_do_not_wait(api: Api, world: World) -> None:
    # CPython's sqlite3 lets go of the GIL at every row and column it fetches: dozens of
    # threads fetching at once convoy on it (at 50 clients the reads served fell to half).

    services = world.services
    turns = services.settings.sqlite_read_threads
    limiter = services.read_limiter
    assert limiter is not None and limiter.total_tokens == turns
    held = HeldAtCheckout()
    engine_events.listen(services.engine, "checkout", held.checkout)
    answers: list[Any] = []
    pages: list[threading.Thread] = []
    live: list[threading.Thread] = []

    def get(path: str) -> threading.Thread:
        worker = threading.Thread(target=lambda: answers.append(api.get(path, user="bob")))
        worker.start()
        return worker

    try:
        pages.extend(get("/api/v1/releases") for _ in range(turns + 3))
        assert held.wait_for(
            lambda: held.inside == turns and limiter.statistics().tasks_waiting == 3
        ), f"{held.inside} reads inside at once, {turns} turns"
        # a live read (it may wait on a cluster) does not queue behind the database reads
        live.append(get("/api/v1/targets/shop/dev"))
        assert held.wait_for(lambda: held.inside == turns + 1)
    finally:
        held.release.set()
        for worker in [*pages, *live]:
            worker.join(30)
        # removed only now: a listener removed while a checkout runs the listeners breaks it
        engine_events.remove(services.engine, "checkout", held.checkout)
    assert sorted(a.status_code for a in answers) == [200] * (turns + 4)
    assert limiter.borrowed_tokens == 0
