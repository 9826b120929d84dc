"""PostgreSQL pooled connections are pinged on checkout only after sitting idle.

A connection given back moments ago is handed out without a round trip (a chat turn paid four
pings); one that idled is pinged first, and one the server dropped meanwhile is replaced before
any statement meets it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from core.db import make_engine
from tests.conftest import service_unavailable


@pytest.fixture
def pg(postgres_url: str | None) -> Iterator[str]:
    if postgres_url is None:
        service_unavailable("PostgreSQL is not available (no initdb/pg_ctl, no test URL)")
    assert postgres_url is not None
    yield postgres_url


def _backend(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(url: str, pid: int) -> None:
    killer = make_engine(url, pool_size=1)
    try:
        with killer.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p")
            while connection.execute(gone, {"p": pid}).scalar_one():  # until it has exited
                connection.commit()
    finally:
        killer.dispose()


def test_a_connection_that_idled_is_pinged_and_a_dead_one_replaced(pg: str) -> None:
    engine = make_engine(pg, pool_size=1, ping_after_idle=0)  # every checkout counts as idle
    try:
        first = _backend(engine)
        _terminate(pg, first)
        assert _backend(engine) != first  # no error: the ping found it dead, the pool replaced it
    finally:
        engine.dispose()


def test_a_connection_just_given_back_is_handed_out_without_a_ping(pg: str) -> None:
    engine = make_engine(pg, pool_size=1, ping_after_idle=3600)
    try:
        first = _backend(engine)
        _terminate(pg, first)
        # Not pinged: the first statement meets the dead connection (the price of the window,
        # said out loud), and the pool replaces it for the next one.
        with pytest.raises(OperationalError), engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert _backend(engine) != first
    finally:
        engine.dispose()
