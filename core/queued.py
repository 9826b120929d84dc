"""What a transaction queues for its commit (audit events, live events), and when it is written.

Queued items live in `Session.info` lists. They are written or published by hooks when the
session's ROOT transaction commits, never when a savepoint is released: the transaction
around a savepoint may still roll back. A savepoint that ends without its release (rolled
back, or closed) takes back only what was queued inside it (an INSERT that lost a race,
caught, keeps the caller's own events), and a transaction that ends without committing takes
back everything it queued.

SQLAlchemy fires `before_commit` for a savepoint's release as well as for the root's commit.
`Session.commit()` releases open savepoints first and then fires the root's with no savepoint
open, so the hooks run where they should. Committing a transaction object (the root, or a
savepoint) while a savepoint inside it is still open fires its hook with that savepoint
current, which cannot be told from the savepoint's own release: with items queued, such a
commit is refused (close savepoints innermost first, as `with` blocks do) instead of leaving
them unwritten.

Queuing begins the session's transaction if it has none, so an item always belongs to one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

Hook = Callable[[Session], None]

# Session.info keys (a sessionmaker's `info` sets them for its sessions): hooks run at the root
# commit, before it (writes) and after it (publishing). They run before `on_root_commit`'s.
BEFORE_ROOT_COMMIT = "shipdeck.before_root_commit"
AFTER_ROOT_COMMIT = "shipdeck.after_root_commit"

# The Session.info keys `queue` has filled; copied to iterate (another thread may add one).
_KEYS: set[str] = set()
_MARKS = "shipdeck.savepoint_marks"  # {savepoint: {key: queue length when it began}}
_RELEASING = "shipdeck.releasing"  # the savepoint whose `before_commit` last fired
_LAST: list[Hook] = []  # every session's last writes at the root commit (the audit link)


def queue(session: Session, key: str, item: Any) -> None:
    """Queue `item` under `key`, for the session's root commit to write or publish."""
    _KEYS.add(key)
    if not session.in_transaction():
        # Begun now, so that a rollback before any statement runs still takes it back (a
        # session not yet begun rolls back without a word, keeping what was queued).
        session.begin()
    session.info.setdefault(key, []).append(item)


def on_root_commit(hook: Hook) -> Hook:
    """Run `hook` at every session's root commit, after the sessions' own hooks."""
    _LAST.append(hook)
    return hook


def add_hooks(
    factory: sessionmaker[Session], *, before: Hook | None = None, after: Hook | None = None
) -> None:
    """Give a sessionmaker's sessions a hook before and/or after their root commits."""
    info = dict(factory.kw.get("info") or {})
    for key, hook in ((BEFORE_ROOT_COMMIT, before), (AFTER_ROOT_COMMIT, after)):
        if hook is not None:
            info[key] = (*info.get(key, ()), hook)
    factory.configure(info=info)


def _queued(session: Session) -> bool:
    return any(session.info.get(key) for key in tuple(_KEYS))


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    savepoint = session.get_nested_transaction()
    if savepoint is None:
        for hook in (*session.info.get(BEFORE_ROOT_COMMIT, ()), *_LAST):
            hook(session)
        return
    # A second firing with the same savepoint current, before it was released: a transaction
    # around it is being committed through it.
    if session.info.get(_RELEASING) is savepoint and _queued(session):
        del session.info[_RELEASING]  # the savepoint stays open; Session.commit() still works
        raise InvalidRequestError(
            "a transaction with queued audit or live events was committed while a savepoint "
            "inside it was open: close savepoints innermost first (`with "
            "session.begin_nested():`) or call Session.commit(), which does"
        )
    session.info[_RELEASING] = savepoint


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    savepoint = session.get_nested_transaction()
    if savepoint is not None:  # released: what it queued is the enclosing transaction's now
        session.info.get(_MARKS, {}).pop(savepoint, None)
        return
    for hook in session.info.get(AFTER_ROOT_COMMIT, ()):
        hook(session)


@event.listens_for(Session, "after_transaction_create")
def _mark(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(_MARKS, {})
        marks[transaction] = {key: len(session.info.get(key, ())) for key in tuple(_KEYS)}


@event.listens_for(Session, "after_transaction_end")
def _end(session: Session, transaction: SessionTransaction) -> None:
    if session.info.get(_RELEASING) is transaction:
        del session.info[_RELEASING]
    if transaction.nested:
        # Ended without its release (rolled back, or closed, which rolls back too): it takes
        # back what was queued since it began.
        marks = session.info.get(_MARKS, {}).pop(transaction, None)
        if marks is not None:
            for key in tuple(_KEYS):  # a key first queued inside it had nothing before it
                del session.info.get(key, [])[marks.get(key, 0) :]
    elif transaction.parent is None:
        # Committed (its hooks took what they write), rolled back or closed: nothing queued
        # outlives the transaction it was queued in. (A failed flush's own inner transaction,
        # neither, takes back nothing: its savepoint, if any, ends next.)
        session.info.pop(_MARKS, None)
        for key in tuple(_KEYS):
            session.info.pop(key, None)
