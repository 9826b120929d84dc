"""The one lock order for release rows: ascending number, before any ticket row.

Every write that moves releases and their tickets locks the release rows first, all of them in
ascending number order (`SELECT ... ORDER BY number FOR UPDATE`), and only then the tickets
(the after-transition hooks move a ticket after its release). The audit chain's head is
locked last, at commit (core.audit.chain). Two transactions that follow this order can wait
for each other but never deadlock. On SQLite `BEGIN IMMEDIATE` already serialises writers.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from core.db import among, among_values
from core.releases.models import Release


@cache
def _lock(one: bool) -> Select[Release]:
    # Built once per variant: every write that moves releases runs one, most for one release
    # (`one`: compared with ==, which PostgreSQL plans once per connection; core.db.among)
    return (
        select(Release)
        .where(among(Release.number, "numbers", one))
        .order_by(Release.number)
        .with_for_update(of=Release)
        .execution_options(populate_existing=True)
    )


def lock_releases(session: Session, numbers: Iterable[int]) -> list[Release]:
    """Lock these release rows in ascending number order and reload them; the rows found."""
    wanted = sorted(set(numbers))
    if not wanted:
        return []
    one, values = among_values(wanted)
    return list(session.scalars(_lock(one), {"numbers": values}))
