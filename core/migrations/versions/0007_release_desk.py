"""release desk: approval ticket timeout per target, apply queue, retries

Revision ID: 0007_release_desk
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "0007_release_desk"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("targets") as batch:
        batch.add_column(sa.Column("approval_timeout_seconds", sa.Integer(), nullable=True))
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("queued_at", core.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("queued_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_releases_retry_of_releases"), "releases", ["retry_of"], ["number"]
        )


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_constraint(op.f("fk_releases_retry_of_releases"), type_="foreignkey")
        batch.drop_column("retry_of")
        batch.drop_column("queued_by")
        batch.drop_column("queued_at")
    with op.batch_alter_table("targets") as batch:
        batch.drop_column("approval_timeout_seconds")
