"""live events outbox: NOTIFY carries ids only

Revision ID: 0006
Revises: 0005_credentials
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "0006"
down_revision: str | None = "0005_credentials"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "live_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_live_outbox")),
    )
    op.create_index(op.f("ix_live_outbox_at"), "live_outbox", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_live_outbox_at"), table_name="live_outbox")
    op.drop_table("live_outbox")
