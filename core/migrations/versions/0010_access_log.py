"""access log: an index on its time, for retention prunes and time-filtered reads

Revision ID: 0010_access_log
Revises: 0009_perf_indexes
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_access_log"
down_revision: str | None = "0009_perf_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_access_at", "audit_access_log", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_access_at", table_name="audit_access_log")
