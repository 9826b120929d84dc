"""active freezes by project: each release read looks up the freeze holding its target

A release's row carries the longest active freeze on its target (a correlated subquery per
row, core/targets/frozen.py `longest_freeze`); lifted and ended freezes pile up over the
years, and without an index each lookup scanned all of them. Only unlifted freezes are indexed.

Revision ID: 0013_active_freezes
Revises: 0012_global_uniques
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_active_freezes"
down_revision: str | None = "0012_global_uniques"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("lifted_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_freezes_project_active",
        "freezes",
        ["project_id", "until"],
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_freezes_project_active", table_name="freezes")
