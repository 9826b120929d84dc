"""global uniques: one global grant per user, one global group per name

A grant or a group on every project has project_id NULL, and NULLs never collide in a unique
constraint: only the writers' lock kept them single (core/targets/parts.py). Partial unique
indexes make the database keep them single for any writer. Copies made before are merged
first: a user keeps their strongest global role, a group name its oldest group, with every
member of its copies.

Revision ID: 0012_global_uniques
Revises: 0011_catalog_version
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_global_uniques"
down_revision: str | None = "0011_catalog_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GLOBAL = sa.text("project_id IS NULL")
RANK = {"viewer": 0, "requester": 1, "approver": 2, "owner": 3, "admin": 4}


def _merge_grants(bind: sa.Connection) -> None:
    rows = bind.execute(
        sa.text("SELECT id, user_id, role FROM grants WHERE project_id IS NULL ORDER BY id")
    ).all()
    kept: dict[int, tuple[int, str]] = {}
    for grant_id, user_id, role in rows:
        best = kept.get(user_id)
        if best is None or RANK.get(role, -1) > RANK.get(best[1], -1):
            kept[user_id] = (grant_id, role)
    extra = [grant_id for grant_id, user_id, _ in rows if kept[user_id][0] != grant_id]
    for grant_id in extra:
        bind.execute(sa.text("DELETE FROM grants WHERE id = :id"), {"id": grant_id})


def _merge_groups(bind: sa.Connection) -> None:
    rows = bind.execute(
        sa.text("SELECT id, name FROM groups WHERE project_id IS NULL ORDER BY id")
    ).all()
    oldest: dict[str, int] = {}
    for group_id, name in rows:
        keep = oldest.setdefault(name, group_id)
        if keep == group_id:
            continue
        bind.execute(
            sa.text(
                "INSERT INTO group_members (group_id, user_id) SELECT :keep, user_id"
                " FROM group_members m WHERE m.group_id = :copy AND NOT EXISTS"
                " (SELECT 1 FROM group_members k WHERE k.group_id = :keep"
                " AND k.user_id = m.user_id)"
            ),
            {"keep": keep, "copy": group_id},
        )
        bind.execute(sa.text("DELETE FROM group_members WHERE group_id = :id"), {"id": group_id})
        bind.execute(sa.text("DELETE FROM groups WHERE id = :id"), {"id": group_id})


def upgrade() -> None:
    bind = op.get_bind()
    _merge_grants(bind)
    _merge_groups(bind)
    op.create_index(
        "uq_grants_user_global",
        "grants",
        ["user_id"],
        unique=True,
        postgresql_where=GLOBAL,
        sqlite_where=GLOBAL,
    )
    op.create_index(
        "uq_groups_name_global",
        "groups",
        ["name"],
        unique=True,
        postgresql_where=GLOBAL,
        sqlite_where=GLOBAL,
    )


def downgrade() -> None:
    op.drop_index("uq_groups_name_global", table_name="groups")
    op.drop_index("uq_grants_user_global", table_name="grants")
