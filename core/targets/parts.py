"""One part of a declaration load, run so that two loads at once end as two loads in a row
(and the other admin writers of people: `users add`, a sign-in through the provider).

A part reads what exists, then writes what is missing or different, then commits with its
audit events. Two parts doing that at once on PostgreSQL (READ COMMITTED) both read "absent"
and both insert (one fails on a unique index), or both update the same row and both audit
the change, or both replace a project's policies and leave two copies of each rule. So:

- every part of every load first takes one transaction-level advisory lock, the declaration
  lock: the second part reads only once the first has committed, sees its rows and changes
  nothing (SQLite's writers already take turns for their whole transaction: BEGIN
  IMMEDIATE). `users add` takes it too: it creates the same users, grants and group
  members (a second global grant or group, project NULL, is refused by the partial unique
  indexes of migration 0012; before, nothing noticed it). So does a legacy import
  (`import legacy`), whose "already imported?" check has no index behind it at all. A
  provider sign-in, in the request path, takes it shared and its person's lock exclusive:
  sign-ins of different people never wait for each other (`take_person_lock`);
- a part that still loses a unique race (to a writer that does not take the lock) is rolled
  back and run again from its read;
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

# The declaration lock ("shipload" as a bigint), held until the taker's transaction ends.
# Every taker takes it before any row lock, so it cannot join a deadlock.
DECLARATION_LOCK = 0x736869706C6F6164
# The key space of the per-person locks (two-number form): "ship" as an int.
PERSON_LOCKS = 0x73686970
# Another try after losing to a writer that does not take the lock: each loss means that
# writer committed, so the next read sees its rows; a few losses in a row is a storm.
RETRIES = 3


def take_declaration_lock(session: Session) -> None:
    """Wait for the declaration lock, held until this transaction ends (PostgreSQL; SQLite's
    writers already take turns)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DECLARATION_LOCK})


def take_person_lock(session: Session, name: str) -> None:
    """Wait for one person's lock, and the declaration lock shared, until this transaction
    ends (PostgreSQL): a sign-in writes that person's rows only.

    Sign-ins are in the request path and many at once (a team's morning): one person's two
    tabs take turns, other people's sign-ins never wait for each other, and a load part or
    `users add` (the declaration lock, exclusive) waits for the sign-ins in flight, and they
    for it. The person is keyed by name (two accounts the provider names alike would race
    for the same user row too); the two-number key never meets the one-number declaration
    key (PostgreSQL keeps the two forms apart).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(
                "SELECT pg_advisory_xact_lock_shared(:key),"
                " pg_advisory_xact_lock(:space, hashtext(:name))"
            ),
            {"key": DECLARATION_LOCK, "space": PERSON_LOCKS, "name": name.lower()},
        )


def load_part(
    session: Session, *, what: str, work: Callable[[], T], again: str = "load the file again"
) -> T:
    """Run `work` (one part: read, write, commit) under the declaration lock, again from its
    read if another writer won a race for the same rows; Conflict (ending with `again`) if it
    keeps losing.

    `work` must commit its own transaction and do nothing outside the database before that,
    so a rolled back attempt left nothing behind.
    """

    def attempt() -> T:
        take_declaration_lock(session)
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
            f"tries in a row; nothing of it was saved: {again}",
            part=what,
            sqlstate=sqlstate(exc),
        ) from exc
