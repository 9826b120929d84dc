"""SQLite writers of one process take the write lock in arrival order, and always give it back."""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from core.db import make_engine, read_engine
from core.sqlite_gate import GatedConnection, WriteGate, gate_for


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    made = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    with made.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)"))
    return made


def _gate(engine: Engine) -> WriteGate:
    return gate_for(str(Path(str(engine.url.database)).resolve()))


def _until_queued(gate: WriteGate, waiting: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while gate.waiting != waiting:
        assert time.monotonic() < deadline, "the writer never queued for its turn"
        threading.Event().wait(0.001)


def test_writers_get_the_lock_in_the_order_they_asked(engine: Engine) -> None:
    # Without the gate SQLite's busy handler lets whoever retries first win: under steady
    # writes one request could lose for seconds (max wait 5.5-6.2 s for 16 writers x 5 ms).
    gate = _gate(engine)
    order: list[int] = []
    holder = engine.connect()
    holder.begin()
    threads = []
    for number in range(8):

        def write(number: int = number) -> None:
            with engine.begin() as connection:
                order.append(number)
                connection.execute(text("INSERT INTO t (who) VALUES (:w)"), {"w": f"🚀{number}"})

        thread = threading.Thread(target=write)
        thread.start()
        threads.append(thread)
        _until_queued(gate, number + 1)  # the next writer starts once this one queues
    holder.commit()
    holder.close()
    for thread in threads:
        thread.join(10)
    assert order == list(range(8))
    assert not gate.held and gate.waiting == 0


def test_the_turn_comes_back_on_rollback_error_and_close(engine: Engine) -> None:
    gate = _gate(engine)
    with pytest.raises(RuntimeError), engine.begin() as connection:
        connection.execute(text("INSERT INTO t (who) VALUES ('x')"))
        raise RuntimeError("the caller failed mid-way")
    assert not gate.held
    with pytest.raises(Exception, match="no such table"), engine.begin() as connection:
        connection.execute(text("INSERT INTO missing VALUES (1)"))
    assert not gate.held
    connection = engine.connect()
    connection.begin()
    assert gate.held
    connection.invalidate()  # a broken connection is closed, not rolled back
    assert not gate.held
    with engine.begin() as connection:  # and the next writer is not kept waiting
        connection.execute(text("INSERT INTO t (who) VALUES ('y')"))
    assert not gate.held


def test_reads_never_queue_for_a_turn(engine: Engine) -> None:
    gate = _gate(engine)
    writer = engine.connect()
    writer.begin()
    with read_engine(engine).connect() as reader:
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
    assert gate.waiting == 0
    writer.rollback()
    writer.close()


def test_a_turn_that_never_comes_falls_back_to_sqlites_own_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The gate orders writers; it never guards data, so a stuck turn is logged, not fatal.
    gate = WriteGate()
    assert gate.acquire(0.01)
    assert not gate.acquire(0.01) and gate.waiting == 0  # a timed-out waiter leaves the queue
    raw = sqlite3.connect(tmp_path / "raw.db", factory=GatedConnection)
    assert isinstance(raw, GatedConnection)
    raw.gate = gate
    with caplog.at_level(logging.WARNING, logger="core.sqlite_gate"):
        raw.take_turn(0.01)
    assert not raw.holds_gate and "no write turn" in caplog.text
    raw.execute("BEGIN IMMEDIATE")  # SQLite's lock is free: the write goes on
    raw.rollback()
    raw.close()
    gate.release()
    assert not gate.held


def test_a_connection_dropped_without_close_gives_its_turn_back(tmp_path: Path) -> None:
    gate = WriteGate()
    raw = sqlite3.connect(tmp_path / "dropped.db", factory=GatedConnection)
    assert isinstance(raw, GatedConnection)
    raw.gate = gate
    raw.take_turn(1)
    assert gate.held
    del raw
    gc.collect()
    assert not gate.held


def test_a_writers_wait_for_its_turn_is_measured(engine: Engine) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(f"shipdeck_sqlite_write_wait_seconds_{name}") or 0.0

    before = (sample("count"), sample("sum"))
    holder = engine.connect()
    holder.begin()  # holds the turn

    def write() -> None:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t (who) VALUES ('🚀')"))

    writer = threading.Thread(target=write)
    writer.start()
    _until_queued(_gate(engine), 1)
    holder.commit()
    holder.close()
    writer.join(10)
    assert sample("count") == before[0] + 2  # the holder (at once) and the writer
    assert sample("sum") > before[1]
