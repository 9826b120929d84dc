"""perf indexes: previews by expiry time (the sweeper reads only what ran out)

Revision ID: 0009_perf_indexes
Revises: 0008_notifications
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009_perf_indexes"
down_revision: str | None = "0008_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_previews_expires_at", "previews", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_previews_expires_at", table_name="previews")
