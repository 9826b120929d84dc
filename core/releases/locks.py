"""The one lock order for release rows: ascending number, before any ticket row.

Every write that moves releases and their tickets locks the release rows first, all of them in
ascending number order (`SELECT ... ORDER BY number FOR UPDATE`), and only then the tickets
(the after-transition hooks move a ticket after its release). The audit chain's head is
locked last, at commit (core.audit.chain). Two transactions that follow this order can wait
for each other but never deadlock. On SQLite `BEGIN IMMEDIATE` already serialises writers.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from core.db import OneOf
from core.releases.models import Release

# Built once: every write that moves releases runs one of them.
_LOCK = (
    select(Release)
    .where(OneOf(Release.number, "numbers"))
    .order_by(Release.number)
    .with_for_update(of=Release)
    .execution_options(populate_existing=True)
)
# Most writes move one release: `==`, which PostgreSQL plans once per connection (OneOf)
_LOCK_ONE = (
    select(Release)
    .where(Release.number == bindparam("number"))
    .with_for_update(of=Release)
    .execution_options(populate_existing=True)
)


def lock_releases(session: Session, numbers: Iterable[int]) -> list[Release]:
    """Lock these release rows in ascending number order and reload them; the rows found."""
    wanted = sorted(set(numbers))
    if not wanted:
        return []
    if len(wanted) == 1:
        return list(session.scalars(_LOCK_ONE, {"number": wanted[0]}))
    return list(session.scalars(_LOCK, {"numbers": wanted}))
