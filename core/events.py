"""Live events: queued on the session, published only after the transaction commits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from core.queued import queue

log = logging.getLogger(__name__)

PENDING = "shipdeck_pending_events"


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

    def __len__(self) -> int:
        """How many subscribers listen now."""
        with self._lock:
            return len(self._subscribers)

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
    queue(session, PENDING, live_event)
