"""SQLite: reads never wait for the write lock. While another connection holds a write
transaction open (a long `shipdeck load`, say), authentication, `/me` and a read list still
answer at once; writes still serialise."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest

from core.db import make_engine
from tests.api.conftest import Api
from tests.conftest import World


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


def test_file_databases_pool_connections_and_reads_begin_deferred(tmp_path: Any) -> None:
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
    assert "BEGIN IMMEDIATE" in statements and "BEGIN DEFERRED" in statements
    assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]  # kept, not closed
    engine.dispose()
