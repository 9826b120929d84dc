"""Publishing live events after commit: in process, or across replicas via PostgreSQL.

On PostgreSQL an event is written to the `live_outbox` table in the committing transaction
and NOTIFY carries only its id: a payload over NOTIFY's 8,000-byte limit (a long reject
comment, a long log line) would otherwise fail the whole transaction. Every replica's
listener reads the row by id and publishes it to its own bus.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import JSON, Engine, TextClause, bindparam, delete, text
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from core.db import Base, UTCDateTime, utcnow
from core.events import PENDING, EventBus, LiveEvent
from core.queued import add_hooks

log = logging.getLogger(__name__)

CHANNEL = "shipdeck_events"
KEEP = timedelta(hours=1)


class LiveOutbox(Base):
    """A committed live event, kept briefly so every replica's listener can read it by id."""

    __tablename__ = "live_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


def make_sessionmaker(engine: Engine, bus: EventBus | None = None) -> sessionmaker[Session]:
    """A session factory whose commits publish queued live events (via the outbox on PostgreSQL)."""
    factory = sessionmaker(engine, expire_on_commit=False)
    if bus is not None:
        install_publisher(factory, bus, notify=engine.dialect.name == "postgresql")
    return factory


def install_publisher(
    factory: sessionmaker[Session], bus: EventBus, *, notify: bool = False
) -> None:
    """Hook a sessionmaker so queued events are published if, and only if, it commits."""
    if notify:
        # Written before the audit head is locked (core.audit.chain), not while holding it.
        add_hooks(factory, before=write_outbox)
        return

    def publish(session: Session) -> None:
        pending: list[LiveEvent] = session.info.pop(PENDING, [])
        for live_event in pending:
            bus.publish(live_event)

    add_hooks(factory, after=publish)


def write_outbox(session: Session) -> None:
    """Put the transaction's queued live events in the outbox and NOTIFY their ids (once)."""
    pending: list[LiveEvent] = session.info.pop(PENDING, [])
    if not pending:
        return
    # One statement for all of a transaction's events, whatever their count (a superseding
    # submit makes three): the rows, then one note per id in the events' order, the format
    # every replica version reads (a rolling upgrade keeps hearing events). It was an ORM
    # bulk INSERT and a NOTIFY apart: two round trips and ~0.6 ms more CPU per write.
    session.execute(
        _outbox_and_notes(),
        {
            # as the JSON column writes it: the standard encoder escapes what UTF-8 cannot
            # carry (a lone surrogate a client sent), where pydantic's refuses it
            "payloads": [json.dumps(e.model_dump(mode="json")) for e in pending],
            "at": utcnow(),
            "channel": CHANNEL,
        },
    )


@cache
def _outbox_and_notes() -> TextClause:
    # Ids are drawn in the ORDER BY's order, and PostgreSQL evaluates a volatile function in
    # the select list after the sort, so the notes go out in the events' order
    # (tests/agent/test_replicas.py hears them in order on another replica).
    return text(
        "WITH written AS ("
        " INSERT INTO live_outbox (payload, at)"
        " SELECT CAST(p AS JSON), :at"
        " FROM unnest(CAST(:payloads AS TEXT[])) WITH ORDINALITY AS t(p, i) ORDER BY i"
        " RETURNING id)"
        " SELECT pg_notify(:channel, id::text) FROM written ORDER BY id"
    ).bindparams(bindparam("at", type_=UTCDateTime))


def prune_outbox(session: Session) -> int:
    """Delete outbox rows every listener has had time to read. Returns the count."""
    result = session.execute(delete(LiveOutbox).where(LiveOutbox.at < utcnow() - KEEP))
    return int(result.rowcount)  # type: ignore[attr-defined]


class PostgresListener:
    """LISTENs on the events channel and publishes the events it names to the local bus."""

    def __init__(self, conninfo: str, bus: EventBus) -> None:
        self._conninfo = conninfo
        self._bus = bus
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shipdeck-listen", daemon=True)
        self._published = 0  # the highest outbox id published so far
        self._progress = threading.Condition()

    def start(self, timeout: float = 10) -> None:
        """Start listening; returns once LISTEN is in place (events after it are not missed)."""
        self._thread.start()
        self._ready.wait(timeout)

    def wait_for(self, outbox_id: int, timeout: float = 10) -> bool:
        """Until the event with this outbox id has been published here (tests, benchmarks)."""
        with self._progress:
            return self._progress.wait_for(lambda: self._published >= outbox_id, timeout)

    def stop(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self._ready.set()
                    delay = 0.5
                    while not self._stop.is_set():
                        # The connection cannot query while notifies() runs: take one note
                        # (those already queued come at once on the next turn), then read it.
                        ids = [
                            int(note.payload)
                            for note in connection.notifies(timeout=0.5, stop_after=1)
                        ]
                        if not ids:
                            continue
                        rows = connection.execute(
                            "SELECT payload FROM live_outbox WHERE id = ANY(%s) ORDER BY id",
                            (ids,),
                        ).fetchall()
                        for (payload,) in rows:
                            self._bus.publish(LiveEvent.model_validate(payload))
                        with self._progress:
                            self._published = max(self._published, *ids)
                            self._progress.notify_all()
            except Exception:  # the database went away: listen again after a pause
                log.warning("event listener lost its connection; reconnecting", exc_info=True)
                self._stop.wait(delay)
                delay = min(delay * 2, 10)
