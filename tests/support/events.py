"""Live events for tests: built as the core makes them, and waited for until they are published."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from api.wiring import Services
from core.db import utcnow
from core.events import LiveEvent


def live_event(
    kind: str,
    data: dict[str, Any] | None = None,
    *,
    release_id: str = "R-1",
    environment: str = "prod",
    state: str = "applying",
) -> LiveEvent:
    """An event of project `shop` stamped now."""
    return LiveEvent(
        kind=kind,
        release_id=release_id,
        project="shop",
        environment=environment,
        lifecycle_state=state,
        at=utcnow(),
        data=data or {},
    )


def published(services: Services) -> int | None:
    """Wait until every committed live event has reached the local bus; the last outbox id.

    On PostgreSQL events travel through the outbox and NOTIFY, after commit; on SQLite (None)
    the commit itself publishes them.
    """
    listener = services._listener
    if listener is None:
        return None
    with services.engine.connect() as connection:
        last = connection.execute(text("SELECT max(id) FROM live_outbox")).scalar()
    if last is not None:
        listener.wait_for(int(last))
    return None if last is None else int(last)
