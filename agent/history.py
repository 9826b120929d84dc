"""A conversation's history: each turn's frames written at once, and the planner's window on it.

The window holds the last messages said, and only those: the tool calls and results between
them (a result can be a page of fifty releases) were read back and parsed every turn only to be
dropped, and they crowded messages out of it. A handler keeps the window as it writes; one
statement before each message says whether anyone else (a second tab, a reconnect while the old
socket finishes, another replica) wrote to the conversation since, and only then is it read.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Any

from sqlalchemy import TextClause, bindparam, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from agent.catalog import CATALOG_TOKEN
from agent.models import ChatMessage
from core.db import AnyRow, insert_rows, plain_rows, utcnow, writing

HISTORY_LIMIT = 200  # frames a resumed session replays
PLANNED_MESSAGES = 10  # messages a planner sees
# A turn's history is one INSERT; a turn of more frames (an LLM's long plan) is written in
# several, in one transaction, within the databases' limits on bound values.
FRAMES_PER_INSERT = 100

_SAID = {"user_message": "user", "assistant_message": "assistant"}
# What a message asks before it is planned, in one statement: the catalog token, and how many
# history rows (and the newest) were written after those the window reflects.
_AFTER = (ChatMessage.session_id == bindparam("session_id"), ChatMessage.id > bindparam("head"))
# A door that reads something anyway before a message (the socket: its token) reads these
# columns with it, in the same round trip (parameters: `Window.probing`).
PROBE_COLUMNS = (
    CATALOG_TOKEN.label("token"),
    select(func.count()).where(*_AFTER).scalar_subquery().label("written"),
    select(func.max(ChatMessage.id)).where(*_AFTER).scalar_subquery().label("newest"),
)
_PROBE = select(*PROBE_COLUMNS)
LAST_FRAMES = (
    select(ChatMessage.id, ChatMessage.frame)
    .where(ChatMessage.session_id == bindparam("session_id"))
    .order_by(ChatMessage.id.desc())
    .limit(HISTORY_LIMIT)
)


class Window:
    """What a planner sees of one conversation, as this handler knows it.

    It reflects the history up to row `head`, plus the `mine` rows this handler wrote since.
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._said: deque[dict[str, str]] = deque(maxlen=PLANNED_MESSAGES)
        self.head = 0
        self.mine = 0

    def fill(self, rows: list[tuple[int, dict[str, Any]]]) -> None:
        """Start over from written history rows `(id, frame)`, oldest first."""
        self._said.clear()
        self._remember([frame for _, frame in rows])
        self.head, self.mine = (rows[-1][0] if rows else 0), 0

    def wrote(self, frames: list[dict[str, Any]]) -> None:
        """This handler wrote these frames to the history."""
        self.mine += len(frames)
        self._remember(frames)

    def probing(self) -> dict[str, Any]:
        """The parameters of `PROBE_COLUMNS` for this window."""
        return {"session_id": self.session_id, "head": self.head}

    def catch_up(self, session: Session, probe: AnyRow | None = None) -> str | None:
        """Read the window again if anyone else wrote to the conversation; returns the catalog
        token, read in the same statement. `probe`: a row with `PROBE_COLUMNS`, read for this
        window in `session` (else they are read here)."""
        if probe is None:
            probe = plain_rows(session, _PROBE, self.probing())[0]
        if probe.written != self.mine:
            rows = plain_rows(session, LAST_FRAMES, {"session_id": self.session_id})
            self.fill([(row.id, row.frame) for row in reversed(rows)])
        elif probe.newest is not None:
            self.head, self.mine = probe.newest, 0
        return None if probe.token is None else str(probe.token)

    def messages(self) -> list[dict[str, str]]:
        """What was said before this message (one left unanswered is not)."""
        said = list(self._said)
        return said[:-1] if said and said[-1]["role"] == "user" else said

    def _remember(self, frames: list[dict[str, Any]]) -> None:
        self._said.extend(
            {"role": _SAID[f["type"]], "content": str(f.get("text", ""))}
            for f in frames
            if f.get("type") in _SAID
        )


def append(
    sessions: sessionmaker[Session], session_id: str, pending: list[tuple[str, dict[str, Any]]]
) -> None:
    """Write a turn's frames `(direction, frame)` to the history, all of them or none."""
    now = utcnow()
    # Multi-row INSERTs, plain Core statements (the ORM inserted and read back each row): one
    # statement, as a turn's history is, needs no BEGIN and COMMIT around it on PostgreSQL.
    chunks = [pending[i : i + FRAMES_PER_INSERT] for i in range(0, len(pending), FRAMES_PER_INSERT)]
    with writing(sessions, statements=len(chunks)) as connection:
        for chunk in chunks:
            params: dict[str, Any] = {"session_id": session_id, "at": now}
            for i, (direction, frame) in enumerate(chunk):
                params[f"direction_{i}"], params[f"frame_{i}"] = direction, frame
            connection.execute(_insert(len(chunk)), params)


@lru_cache(maxsize=FRAMES_PER_INSERT)
def _insert(rows: int) -> TextClause:
    """One INSERT of `rows` frames, built once per count (see `insert_rows`): compiling it
    anew was most of writing a turn's history."""
    sql, binds = insert_rows(
        ChatMessage, ("session_id", "direction", "frame", "at"), rows, shared=("session_id", "at")
    )
    return text(sql).bindparams(*binds)
