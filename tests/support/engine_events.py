"""Engine events for tests, on every engine a server's statements run on.

On PostgreSQL reads (and one-statement writes) run on the engine's autocommit twin
(`core.db.read_engine`), which has its own pool and its own events: a listener on the engine
alone would miss them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

from core.db import engines


def listen(engine: Engine, name: str, fn: Callable[..., Any]) -> None:
    """`event.listen` on the engine and its twin."""
    for target in engines(engine):
        event.listen(target, name, fn)


def remove(engine: Engine, name: str, fn: Callable[..., Any]) -> None:
    """`event.remove` from the engine and its twin."""
    for target in engines(engine):
        event.remove(target, name, fn)
