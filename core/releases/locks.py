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
from core.permissions import Actor
from core.releases.models import Release


@cache
def _lock(one: bool, projects: bool | None) -> Select[Release]:
    # Built once per variant: every write that moves releases runs one, most for one release
    # (`one`: compared with ==, which PostgreSQL plans once per connection; core.db.among).
    # `projects`: None reads whatever the numbers name; else only rows of the bound projects.
    query = select(Release).where(among(Release.number, "numbers", one))
    if projects is not None:
        query = query.where(among(Release.project_id, "projects", projects))
    return (
        query.order_by(Release.number)
        .with_for_update(of=Release)
        .execution_options(populate_existing=True)
    )


def lock_releases(
    session: Session, numbers: Iterable[int], *, seen_by: Actor | None = None
) -> list[Release]:
    """Lock these release rows in ascending number order and reload them; the rows found.

    `seen_by`: only rows of projects the actor has a role on are read and locked. One they
    cannot see is neither returned nor locked, exactly as a missing one: not even a wait
    behind a writer that holds its row tells the two apart.
    """
    wanted = sorted(set(numbers))
    if not wanted:
        return []
    one, values = among_values(wanted)
    params: dict[str, object] = {"numbers": values}
    scope = None
    visible = seen_by.visible_projects() if seen_by is not None else None
    if visible is not None:
        if not visible:
            return []
        scope, params["projects"] = among_values(visible)
    return list(session.scalars(_lock(one, scope), params))
