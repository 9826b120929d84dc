"""PostgreSQL reads run on a pool of connections opened in autocommit, never switched.

Taking a transactional connection from the shared pool and switching it to autocommit at
checkout, then back at checkin, cost ~65 us of CPU and ~90 us in all per checkout; a chat turn
checked out four. The readers' pool keeps its connections in autocommit for good, and writers
keep theirs transactional.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.pool import QueuePool

from core.db import engines, make_engine, read_engine
from tests.conftest import service_unavailable


@pytest.fixture
def engine(postgres_url: str | None) -> Iterator[Engine]:
    if postgres_url is None:
        service_unavailable("PostgreSQL is not available (no initdb/pg_ctl, no test URL)")
    assert postgres_url is not None
    engine = make_engine(postgres_url, pool_size=4)
    yield engine
    engine.dispose()


def _in_a_transaction(connection: Connection) -> bool:
    # a second statement of one transaction shares its start time; an autocommit one does not
    connection.execute(text("SELECT pg_sleep(0.01)"))
    return not connection.execute(text("SELECT now() = statement_timestamp()")).scalar_one()


def test_reads_run_on_autocommit_connections_that_are_never_switched(engine: Engine) -> None:
    reader = read_engine(engine)
    assert read_engine(engine) is reader and engines(engine) == [engine, reader]
    assert isinstance(engine.pool, QueuePool) and isinstance(reader.pool, QueuePool)
    assert reader.pool is not engine.pool
    # pool_size is shared, not doubled, and so is the burst allowance (half as many more)
    assert engine.pool.size() + reader.pool.size() == 4
    assert engine.pool._max_overflow + reader.pool._max_overflow == 2

    with reader.connect() as connection:
        dbapi = connection.connection.dbapi_connection
        assert dbapi is not None and dbapi.autocommit
        assert not _in_a_transaction(connection)
    assert dbapi.autocommit  # given back as it was: nothing to switch at the next checkout

    with engine.connect() as connection:  # writers keep their transactions
        assert _in_a_transaction(connection)
        assert not connection.connection.dbapi_connection.autocommit  # type: ignore[union-attr]


def test_disposing_the_engine_closes_the_readers_pool(engine: Engine) -> None:
    reader = read_engine(engine)
    with reader.connect() as connection:
        connection.execute(text("SELECT 1"))
    pool = reader.pool
    assert isinstance(pool, QueuePool) and pool.checkedin() == 1
    engine.dispose()
    assert pool.checkedin() == 0  # closed, not only forgotten


@pytest.mark.parametrize("pool_size", [1, 2, 3, 40])
def test_the_two_pools_keep_what_one_pool_kept(postgres_url: str | None, pool_size: int) -> None:
    # SHIPDECK_DB_POOL_SIZE kept, and half as many more under bursts, whatever the split
    if postgres_url is None:
        service_unavailable("PostgreSQL is not available (no initdb/pg_ctl, no test URL)")
    assert postgres_url is not None
    engine = make_engine(postgres_url, pool_size=pool_size)
    try:
        pools = [e.pool for e in engines(engine)]
        assert all(isinstance(pool, QueuePool) for pool in pools)
        assert sum(pool.size() for pool in pools) == pool_size  # type: ignore[attr-defined]
        burst = sum(pool._max_overflow for pool in pools)  # type: ignore[attr-defined]
        assert burst == pool_size // 2
        assert len(pools) == (1 if pool_size == 1 else 2)  # one connection cannot be split
    finally:
        engine.dispose()
