"""What a transaction queues for its commit (audit events, live events), and what a rollback
takes back.

Queued items live in `Session.info` lists and are written or published when the session
commits. A rollback drops what its transaction queued; a rolled-back savepoint drops only what
was queued since it began, so the outer transaction still commits its own (an INSERT that lost
a race inside a savepoint must not take the caller's audit events with it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

_KEYS: set[str] = set()  # the Session.info keys `queue` has filled
_MARKS = "shipdeck.savepoint_marks"  # {savepoint: {key: queue length when it began}}


def queue(session: Session, key: str, item: Any) -> None:
    """Queue `item` under `key` for the session's transaction to write or publish at commit."""
    _KEYS.add(key)
    if not session.in_transaction():
        # Begun now, so that a rollback before any statement runs still takes it back (a
        # session not yet begun rolls back without a word, keeping what was queued).
        session.begin()
    session.info.setdefault(key, []).append(item)


@event.listens_for(Session, "after_transaction_create")
def _mark(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(_MARKS, {})
        marks[transaction] = {key: len(session.info.get(key, ())) for key in _KEYS}


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # fired before `after_soft_rollback`, which has no use
        session.info.pop(_MARKS, None)  # for the marks of a root transaction


@event.listens_for(Session, "after_soft_rollback")
def _take_back(session: Session, previous_transaction: SessionTransaction) -> None:
    marks = session.info.get(_MARKS, {}).pop(previous_transaction, None)
    if previous_transaction.nested:
        for key, length in (marks or {}).items():
            del session.info.get(key, [])[length:]
        return
    for key in _KEYS:
        session.info.pop(key, None)
