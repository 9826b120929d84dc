"""Engine events for tests, on every engine a server's statements run on.

On PostgreSQL reads (and one-statement writes) run on the engine's autocommit twin
(`core.db.read_engine`), which has its own pool and its own events: a listener on the engine
alone would miss them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def request_statements(engine: Engine) -> Iterator[list[str]]:
    """Statements sent by request handlers (the app's worker threads), not background work;
    BEGINs aside, whitespace folded."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread().name.startswith("AnyIO worker") and not statement.startswith(
            "BEGIN"
        ):
            statements.append(" ".join(statement.split()))

    listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        remove(engine, "before_cursor_execute", record)
