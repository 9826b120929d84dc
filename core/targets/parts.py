"""One part of a declaration load, run so that two loads at once end as two loads in a row.

A part reads what exists, then writes what is missing or different, then commits with its
audit events. Two parts doing that at once on PostgreSQL (READ COMMITTED) both read "absent"
and both insert (one fails on a unique index), or both update the same row and both audit
the change, or both replace a project's policies and leave two copies of each rule. So:

- every part of every load first takes one transaction-level advisory lock: the second part
  reads only once the first has committed, sees its rows and changes nothing (SQLite's
  writers already take turns for their whole transaction: BEGIN IMMEDIATE);
- a part that still loses a unique race (to a writer that is not a load: `users add`, a
  first sign-in creating the same user) is rolled back and run again from its read;
- a part that keeps losing ends in a Conflict that says so, never a raw database error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.db import UNIQUE_VIOLATION, retryable_failure, retrying, sqlstate
from core.errors import Conflict

T = TypeVar("T")
log = logging.getLogger("shipdeck.load")

# The advisory lock every load part holds until it commits ("shipload" as a bigint). Nothing
# else takes it, and a part takes it before any row lock, so it cannot join a deadlock.
LOAD_LOCK = 0x736869706C6F6164
# Another try after losing to a writer that does not take LOAD_LOCK: each loss means that
# writer committed, so the next read sees its rows; a few losses in a row is a storm.
RETRIES = 3


def serialise_loads(session: Session) -> None:
    """Wait for the loads' lock, held until this transaction ends (PostgreSQL; SQLite's
    writers already take turns)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOAD_LOCK})


def load_part(session: Session, *, what: str, work: Callable[[], T]) -> T:
    """Run `work` (one part: read, write, commit) under the loads' lock, again from its read
    if another writer won a race for the same rows; Conflict if it keeps losing.

    `work` must commit its own transaction and do nothing outside the database before that,
    so a rolled back attempt left nothing behind.
    """

    def attempt() -> T:
        serialise_loads(session)
        return work()

    try:
        return retrying(
            attempt,
            what=what,
            retries=RETRIES,
            before_retry=session.rollback,
            also=UNIQUE_VIOLATION,
        )
    except DBAPIError as exc:
        if not retryable_failure(exc, UNIQUE_VIOLATION):
            raise
        session.rollback()
        log.error(
            "%s: gave up after %d tries (SQLSTATE %s): other writers kept changing the same rows",
            what,
            RETRIES + 1,
            sqlstate(exc),
        )
        raise Conflict(
            f"{what}: other writers changed the same rows at the same time, {RETRIES + 1} "
            "tries in a row; nothing of this part was saved (the parts before it were): "
            "load the file again",
            part=what,
            sqlstate=sqlstate(exc),
        ) from exc
