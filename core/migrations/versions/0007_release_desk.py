"""release desk: ticket timeout, apply queue, retries, change windows, freezes, promotion

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
        batch.add_column(sa.Column("windows", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("promotion", sa.JSON(), nullable=True))
    op.create_table(
        "freezes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("until", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lifted_by", sa.String(length=64), nullable=True),
        sa.Column("lifted_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_freezes_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_freezes")),
    )
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("queued_at", core.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("queued_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("promotion_override_by", sa.String(length=64), nullable=True))
        batch.create_foreign_key(
            op.f("fk_releases_retry_of_releases"), "releases", ["retry_of"], ["number"]
        )


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_constraint(op.f("fk_releases_retry_of_releases"), type_="foreignkey")
        batch.drop_column("retry_of")
        batch.drop_column("promotion_override_by")
        batch.drop_column("queued_by")
        batch.drop_column("queued_at")
    op.drop_table("freezes")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("promotion")
    with op.batch_alter_table("targets") as batch:
        batch.drop_column("windows")
        batch.drop_column("approval_timeout_seconds")
