"""Engine, sessions and the declarative base; built by factories, never at import."""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic_core import from_json
from sqlalchemy import (
    ARRAY,
    Boolean,
    ColumnElement,
    DateTime,
    Engine,
    Executable,
    Integer,
    MetaData,
    Row,
    String,
    any_,
    bindparam,
    create_engine,
    event,
    literal_column,
    text,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.pool import NullPool, QueuePool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import FromClause
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator

from core.metrics import DB_RETRIES
from core.sqlite_gate import GatedConnection, gate_for
from core.text import clip

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every core table."""

    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Clipped(TypeDecorator[str]):
    """A bounded free-text column: longer values are cut with a marker, never refused.

    PostgreSQL refuses a value over VARCHAR(n) and would fail the whole transaction (a failure
    reason that cannot be written leaves a release stuck), so the bound is enforced here.
    """

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.limit = length

    def stored(self, value: str | None) -> str | None:
        """The value as the column stores it."""
        return None if value is None else clip(value, self.limit)

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return self.stored(value)


def as_stored(entity: type, key: str, value: Any) -> Any:
    """`value` as the column behind `entity.key` stores it: a Clipped text cut to its bound.

    For writes that bypass attribute events (an UPDATE mirrored with `set_committed_value`).
    """
    column_type: object = sa_inspect(entity).columns[key].type
    if isinstance(column_type, Clipped) and isinstance(value, str):
        return column_type.stored(value)
    return value


def _clipping(column: Clipped) -> Callable[[object, str | None, object, object], str | None]:
    def clipped(target: object, value: str | None, old: object, initiator: object) -> str | None:
        return column.stored(value)

    return clipped


@event.listens_for(Base, "mapper_configured", propagate=True)
def _clip_when_set(mapper: Any, class_: type) -> None:
    # A Clipped attribute holds what its column stores from the moment it is set: a writer
    # that answers from the objects it holds (core.flows.views.committed_view) says what a
    # fresh read says, not the longer text it was given.
    for prop in mapper.column_attrs:
        column_type = prop.columns[0].type
        if isinstance(column_type, Clipped):
            attribute = getattr(class_, prop.key)
            event.listen(attribute, "set", _clipping(column_type), retval=True)


def utcnow() -> datetime:
    """Now, in UTC, aware."""
    return datetime.now(UTC)


class OneOf(ColumnElement[bool]):
    """`column IN (the list bound as `name`)`: on PostgreSQL `column = ANY(:name)`.

    An expanding IN renders one placeholder per value at every execution (SQLAlchemy's
    post-compile step: ~5% of a PostgreSQL page's CPU), and each list length is another
    statement text for the server to parse and plan. One array parameter keeps one text,
    which psycopg prepares once per connection. SQLite has no arrays: expanding IN there.
    """

    inherit_cache = True
    _is_implicitly_boolean = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]
    type = Boolean()

    def __init__(self, column: ColumnElement[Any] | InstrumentedAttribute[Any], name: str) -> None:
        self.column: ColumnElement[Any] = column.expression
        self.name = name

    @property
    def _from_objects(self) -> list[FromClause]:
        # the column's table joins the FROM clause, as it would under `column.in_(...)`
        return self.column._from_objects


@compiles(OneOf)
def _expanding_in(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(OneOf, "postgresql")
def _equals_any(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    item = element.column.type
    base = item.impl_instance if isinstance(item, TypeDecorator) else item
    if isinstance(base, String):
        item = String()  # cast to VARCHAR(n)[], a longer value would be cut and match a prefix
    array = bindparam(element.name, type_=ARRAY(item))
    return compiler.process(element.column == any_(array), **kw)


def among(column: ColumnElement[Any] | InstrumentedAttribute[Any], name: str, one: bool) -> Any:
    """`OneOf(column, name)`, or with `one` `column == :name`, for the variant of a statement
    built for lookups of one value (bind `among_values`' value as `name`)."""
    return column == bindparam(name) if one else OneOf(column, name)


def among_values(values: Sequence[Any]) -> tuple[bool, Any]:
    """Which variant of an `among` statement looks up `values`, and the value to bind."""
    return (True, values[0]) if len(values) == 1 else (False, list(values))


def written(value: int) -> ColumnElement[int]:
    """An integer written into the statement (a LIMIT), not bound.

    PostgreSQL plans a prepared statement once, and reuses that generic plan, only when it
    costs about what a plan for the bound values does. With a bound LIMIT the generic plan of
    a releases page sorted every release, so the server planned the page again at every
    execution: ~8 ms of its ~10 ms, on the database's CPU (README, "Plans PostgreSQL keeps").
    """
    return literal_column(str(int(value)), Integer)


# A row of any width (Row is generic over its column types).
AnyRow = Row[*tuple[Any, ...]]


def plain_rows(
    session: Session, statement: Executable, params: dict[str, Any] | None = None
) -> Sequence[AnyRow]:
    """All rows of a column SELECT, run on the session's connection as plain Core rows.

    The ORM's result machinery (compile-state setup, `loading.instances`, row re-wrapping)
    was about a fifth of a page's CPU for rows that never become entities. Pending changes of
    the session are flushed first, as `session.execute` would.
    """
    session.flush()
    return session.connection().execute(statement, params or {}).all()


def db_now(session: Session) -> datetime:
    """The database's clock: leases are compared against it, not each replica's own clock."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(text("SELECT clock_timestamp()"))
    else:
        raw = session.scalar(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))
        value = datetime.fromisoformat(str(raw))
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def insert_rows(
    model: type[Base], columns: Sequence[str], count: int, *, shared: Sequence[str] = ()
) -> tuple[str, list[BindParameter[Any]]]:
    """ONE INSERT of `count` rows into `model`'s table, as SQL and its typed parameters.

    SQLAlchemy never caches a multi-row `insert().values()` (it has no cache key), so one sent
    often was compiled anew every time; a text statement the caller builds once per row count
    is compiled once. Row i's value of a column is parameter `{column}_{i}`, a `shared`
    column's is `{column}` for every row; each is typed as its column, so values take the
    same bind processing (JSON, time zones, clipping) as the ORM gives them.
    """
    table = model.__table__
    rows = ", ".join(
        "(" + ", ".join(f":{c}" if c in shared else f":{c}_{i}" for c in columns) + ")"
        for i in range(count)
    )
    binds = [bindparam(c, type_=table.c[c].type) for c in shared]
    binds += [
        bindparam(f"{c}_{i}", type_=table.c[c].type)
        for i in range(count)
        for c in columns
        if c not in shared
    ]
    return f"INSERT INTO {model.__tablename__} ({', '.join(columns)}) VALUES {rows}", binds


BUSY_SECONDS = 30  # how long a SQLite writer waits for the write lock before it fails

# Execution option naming how a SQLite transaction begins: "IMMEDIATE" (the default: the
# transaction may write) or "NONE" (reads: no BEGIN at all, so each statement reads its own
# snapshot, as PostgreSQL's autocommit readers do; no write lock, never waits on a writer).
SQLITE_BEGIN = "shipdeck_sqlite_begin"


def json_loads(text: str | bytes) -> Any:
    """JSON columns as read: pydantic-core's parser, ~5x the standard one on small documents
    (a page decodes some 300). The same values; what it refuses (a lone surrogate escape,
    which the standard parser reads) goes to the standard parser."""
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)


def make_engine(
    url: str, *, pool_size: int = 40, ping_after_idle: float | None = None, **kwargs: Any
) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and write-serialising transactions.

    `pool_size` is PostgreSQL's (SQLite keeps 8 and overflows without bound: it serialises
    writers itself), and so is `ping_after_idle` (see `ping_when_idle`)."""
    kwargs.setdefault("json_deserializer", json_loads)
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        if not memory:
            path = url.split("///", 1)[-1]
            Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": BUSY_SECONDS}
        if not memory:
            connect_args["factory"] = GatedConnection
        kwargs.setdefault("connect_args", connect_args)
        if memory:
            kwargs.setdefault("poolclass", NullPool)
        else:
            # Pooled connections skip the connect PRAGMAs on every request; each one is rolled
            # back when returned. Overflow is unbounded: SQLite itself serialises the writers.
            kwargs.setdefault("poolclass", QueuePool)
            kwargs.setdefault("pool_size", 8)
            kwargs.setdefault("max_overflow", -1)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine, None if memory else str(Path(path).expanduser().resolve()))
        return engine
    # A server runs up to 40 request threads (anyio's default limiter), each holding one
    # connection at a time: with 10 kept, a loaded server opened and closed overflow
    # connections (a backend process each) ~15 times a second. Idle ones are only kept.
    # Half of them are the autocommit readers' (`read_engine`): the two pools together keep
    # `pool_size`, and open at most half as many more under bursts, as one pool did.
    twin = pool_size >= 2 and "isolation_level" not in kwargs
    readers = pool_size // 2 if twin else 0
    spare = pool_size // 2  # the burst allowance, shared the same way
    engine = _pg_engine(url, pool_size - readers, spare - readers // 2, ping_after_idle, kwargs)
    if twin:
        options = {**kwargs, "isolation_level": AUTOCOMMIT}
        reader = _pg_engine(url, readers, readers // 2, ping_after_idle, options)
        _READERS[engine] = reader
        # the readers' pool goes when the engine's does (a server's close, a test's world)
        event.listen(engine, "engine_disposed", lambda _: reader.dispose())
    return engine


AUTOCOMMIT = "AUTOCOMMIT"
# PostgreSQL engines' autocommit twins (see `read_engine`), kept as long as the engine is.
_READERS: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def _pg_engine(
    url: str, pool_size: int, overflow: int, ping_after_idle: float | None, kwargs: dict[str, Any]
) -> Engine:
    options = {"pool_size": pool_size, "max_overflow": overflow, **kwargs}
    engine = create_engine(url, **options)
    if not kwargs.get("pool_pre_ping"):
        ping_when_idle(
            engine, PING_AFTER_IDLE_SECONDS if ping_after_idle is None else ping_after_idle
        )
    return engine


# A pooled connection given back less than this long ago is handed out without a ping.
PING_AFTER_IDLE_SECONDS = 0.5
_RETURNED = "shipdeck_returned_at"


def ping_when_idle(engine: Engine, seconds: float) -> None:
    """Ping a pooled connection on checkout only if it sat idle for `seconds` or more.

    Pinging every checkout (`pool_pre_ping`) cost one round trip per transaction: a chat turn
    takes four connections one after another, each used milliseconds before. A connection
    that just worked is handed out as is (as HikariCP's 500 ms "alive bypass" does); one that
    idled is pinged, and a dead one is replaced before anyone uses it. What is given up: a
    server restart inside that half second fails the one statement that meets the dead
    connection, and the pool then replaces every connection older than the failure.
    """

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get(_RETURNED)
        if returned is not None and time.monotonic() - returned < seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # the pool drops this connection and checks out another (a fresh one if need be)
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


def _configure_sqlite(engine: Engine, path: str | None) -> None:
    # pysqlite's own transaction handling defers BEGIN and would let two writers read the
    # same audit head; BEGIN IMMEDIATE makes SQLite serialise writers like a row lock would.
    # Readers (see `read_engine`) begin no transaction: under WAL each statement reads a
    # snapshot and never waits for the write lock, so a long write cannot make
    # authentication fail.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
        cursor.close()
        if path is not None and isinstance(dbapi_connection, GatedConnection):
            dbapi_connection.gate = gate_for(path)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE") == "NONE":
            return
        # Writers of this process queue for their turn (core/sqlite_gate.py), then SQLite's
        # lock; the turn ends when the connection commits, rolls back or closes.
        dbapi_connection = connection.connection.dbapi_connection
        if isinstance(dbapi_connection, GatedConnection):
            dbapi_connection.take_turn(BUSY_SECONDS / 3)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if isinstance(dbapi_connection, GatedConnection):
                dbapi_connection.give_back()
            raise


def read_engine(engine: Engine) -> Engine:
    """The engine for work that only reads, or writes one statement (atomic by itself).

    No transaction on either database: each statement reads its own snapshot, so a read of
    several statements may see a write land between two of them, alike on both (under
    READ COMMITTED a PostgreSQL transaction would see the same). It saves a BEGIN and a
    ROLLBACK each: round trips on PostgreSQL, ~0.1 ms of CPU per read on SQLite (a chat turn
    makes three). SQLite: the same engine and pool, without BEGIN; no write lock is taken
    (a one-statement write takes it for that statement). PostgreSQL: a pool of connections
    opened in autocommit (`make_engine` keeps it): switching a pooled connection to
    autocommit at checkout and back at checkin cost ~65 us of CPU and ~90 us in all per
    checkout, and a chat turn checks out four.
    """
    if engine.dialect.name == "postgresql":
        reader = _READERS.get(engine)
        if reader is not None:
            return reader
        return engine.execution_options(isolation_level=AUTOCOMMIT)  # not from make_engine
    return engine.execution_options(**{SQLITE_BEGIN: "NONE"})


def engines(engine: Engine) -> list[Engine]:
    """The engine and its autocommit twin, if it has one (to listen to every statement)."""
    reader = _READERS.get(engine)
    return [engine] if reader is None else [engine, reader]


@contextmanager
def writing(sessions: sessionmaker[Session], *, statements: int) -> Iterator[Connection]:
    """A connection for a write of `statements` statements, committed as the block ends.

    One statement is atomic by itself: on PostgreSQL it then runs in autocommit, without the
    BEGIN and COMMIT round trips around it. SQLite takes its write lock as every writer does.
    """
    engine = sessions.kw["bind"]
    assert isinstance(engine, Engine)
    if statements == 1 and engine.dialect.name == "postgresql":
        with read_engine(engine).connect() as connection:
            yield connection
    else:
        with engine.begin() as connection:
            yield connection


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory for reads: on SQLite its transactions never take the write lock."""
    return sessionmaker(read_engine(engine), expire_on_commit=False)


# PostgreSQL chose this transaction as a deadlock victim, or could not serialise it: the
# whole transaction was rolled back and may be run again as it was.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
_COMMITS = "shipdeck.commits"


# A unique violation (23505) is NOT in that set: most are a caller's real mistake (a reused
# key, a duplicate name) that running again repeats, or worse hides. Only work that reads
# before it inserts, and that changes nothing on a second run which sees the winner's row,
# may retry on it, and says so with `also=UNIQUE_VIOLATION` (a declaration load's parts).
UNIQUE_VIOLATION = frozenset({"23505"})


def retryable_failure(exc: BaseException, also: frozenset[str] = frozenset()) -> bool:
    """Whether `exc` is a deadlock or serialization failure the database rolled back whole
    (or a failure with one of the SQLSTATEs in `also`)."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in RETRYABLE_SQLSTATES or code in also


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE a database error carries ("?" when none)."""
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "?")


T = TypeVar("T")
_retry_log = logging.getLogger("shipdeck.retry")


def retrying(
    work: Callable[[], T],
    *,
    what: str,
    retries: int = 1,
    before_retry: Callable[[], None] | None = None,
    also: frozenset[str] = frozenset(),
) -> T:
    """Run `work`, and run it again (at most `retries` more times) if the database rolled it
    back whole as a deadlock victim or a serialization failure (SQLSTATE 40P01 / 40001), or
    failed it with a SQLSTATE in `also`.

    `work` must be one whole transaction that did nothing outside the database before its
    commit, so running it again is the same as running it once (work that committed part of
    itself must raise something else). `before_retry` resets what `work` reuses (a session
    to roll back). Each retry is logged with `what` and the SQLSTATE.
    """
    for attempt in range(retries + 1):
        try:
            return work()
        except Exception as exc:
            if attempt >= retries or not retryable_failure(exc, also):
                raise
            DB_RETRIES.labels(sqlstate(exc)).inc()
            _retry_log.warning(
                "%s: retrying after the database rolled it back (%s, attempt %d of %d)",
                what,
                sqlstate(exc),
                attempt + 2,
                retries + 1,
            )
            if before_retry is not None:
                before_retry()
    raise AssertionError("unreachable")  # the last attempt returned or raised


def commits(session: Session) -> int:
    """How many transactions this session has committed so far."""
    return int(session.info.get(_COMMITS, 0))


@event.listens_for(Session, "after_commit")
def _count_commit(session: Session) -> None:
    if not session.in_nested_transaction():  # a savepoint's release commits nothing yet
        session.info[_COMMITS] = commits(session) + 1


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


class WriteLockPacer:
    """Lets other writers in between the transactions of a long job (SQLite only).

    SQLite has one write lock and no queue: a waiting writer retries every 100 ms or so, and
    a job that begins its next transaction the moment it commits the last one takes the lock
    back before anyone notices it was free. After each `work` seconds of transactions the
    pacer leaves the lock free for `pause` seconds, longer than a waiter's retry interval.
    PostgreSQL queues lock waiters, so there the pacer does nothing.
    """

    def __init__(self, session: Session, work: float = 0.25, pause: float = 0.12) -> None:
        self.active = session.get_bind().dialect.name == "sqlite"
        self.work = work
        self.pause = pause
        self.since = time.monotonic()

    def committed(self) -> None:
        """Call right after a commit: pause if the job has held the lock long enough."""
        if self.active and time.monotonic() - self.since >= self.work:
            time.sleep(self.pause)
            self.since = time.monotonic()
