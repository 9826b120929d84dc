"""Live events: queued on the session, published only after the transaction commits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import event, text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_PENDING = "shipdeck_pending_events"


class LiveEvent(BaseModel):
    """A change other parties may want to see at once (chat cards, pages)."""

    kind: str = Field(description="release_update | approval_requested | progress")
    release_id: str
    project: str
    environment: str
    lifecycle_state: str
    at: datetime
    data: dict[str, Any] = Field(default_factory=dict)


Subscriber = Callable[[LiveEvent], None]


class EventBus:
    """In-process fan-out of committed events to subscribers."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Register a subscriber; returns a function that unregisters it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, live_event: LiveEvent) -> None:
        """Deliver an event to every subscriber; one failing subscriber never stops the rest."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(live_event)
            except Exception:  # a broken listener must not break a release
                log.exception("live event subscriber failed")


def queue_event(session: Session, live_event: LiveEvent) -> None:
    """Queue an event to publish if, and only if, the session's transaction commits."""
    session.info.setdefault(_PENDING, []).append(live_event)


def install_publisher(
    session_class: type[Session] | Any, bus: EventBus, *, notify: bool = False
) -> None:
    """Hook a sessionmaker so queued events are published if the transaction commits.

    In-process (`notify=False`) they reach `bus` after commit. With PostgreSQL (`notify=True`)
    they go out as NOTIFY inside the committing transaction, so every replica's listener (this
    one's too) receives them exactly when, and only if, it commits.
    """
    if notify:

        @event.listens_for(session_class, "before_commit")
        def _notify(session: Session) -> None:
            for live_event in session.info.pop(_PENDING, []):
                session.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CHANNEL, "payload": live_event.model_dump_json()},
                )

    else:

        @event.listens_for(session_class, "after_commit")
        def _publish(session: Session) -> None:
            pending: list[LiveEvent] = session.info.pop(_PENDING, [])
            for live_event in pending:
                bus.publish(live_event)

    @event.listens_for(session_class, "after_soft_rollback")
    def _discard(session: Session, previous_transaction: Any) -> None:
        session.info.pop(_PENDING, None)


CHANNEL = "shipdeck_events"


class PostgresListener:
    """LISTENs on the events channel and publishes what arrives to the local bus."""

    def __init__(self, conninfo: str, bus: EventBus) -> None:
        self._conninfo = conninfo
        self._bus = bus
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shipdeck-listen", daemon=True)

    def start(self, timeout: float = 10) -> None:
        """Start listening; returns once LISTEN is in place (events after it are not missed)."""
        self._thread.start()
        self._ready.wait(timeout)

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
                        for note in connection.notifies(timeout=0.5):
                            self._bus.publish(LiveEvent.model_validate_json(note.payload))
            except Exception:  # the database went away: listen again after a pause
                log.warning("event listener lost its connection; reconnecting", exc_info=True)
                self._stop.wait(delay)
                delay = min(delay * 2, 10)
