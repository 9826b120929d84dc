"""Live events as the core makes them, for tests that queue or publish their own."""

from __future__ import annotations

from typing import Any

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
