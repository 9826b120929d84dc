"""catalog version: a token every write to projects, targets or services changes (triggers)

Chat turns cut each caller's catalog from rows read again only when the token moved. The
database moves it, so no writer (a declaration load, a migration, an operator's SQL) can
change the catalog and leave a cache behind. The token is random, so two databases, or one
database before and after a restore, never share one for different rows.

Revision ID: 0011_catalog_version
Revises: 0010_access_log
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_catalog_version"
down_revision: str | None = "0010_access_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What each table's catalog is made of: an UPDATE of other columns changes no catalog.
WATCHED = {
    "projects": ["name", "promotion"],
    "targets": ["project_id", "environment"],
    "services": ["project_id", "name"],
}
PG_TOKEN = "md5(random()::text || clock_timestamp()::text)"
SQLITE_TOKEN = "lower(hex(randomblob(16)))"


def upgrade() -> None:
    op.create_table(
        "catalog_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_version")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"INSERT INTO catalog_version (id, token) VALUES (1, {PG_TOKEN})")
        # The function finds catalog_version by the schema shipdeck migrated, whatever the
        # search_path of the session that writes (an operator's, another role's).
        op.execute(
            "CREATE FUNCTION shipdeck_catalog_changed() RETURNS trigger LANGUAGE plpgsql "
            "SET search_path FROM CURRENT AS $$ "
            f"BEGIN UPDATE catalog_version SET token = {PG_TOKEN}; RETURN NULL; END $$"
        )
        for table, columns in WATCHED.items():
            # once per statement, however many rows it wrote
            op.execute(
                f"CREATE TRIGGER catalog_changed AFTER INSERT OR DELETE OR TRUNCATE "
                f"OR UPDATE OF {', '.join(columns)} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION shipdeck_catalog_changed()"
            )
        return
    op.execute(f"INSERT INTO catalog_version (id, token) VALUES (1, {SQLITE_TOKEN})")
    bump = f"BEGIN UPDATE catalog_version SET token = {SQLITE_TOKEN}; END"
    for table, columns in WATCHED.items():
        op.execute(f"CREATE TRIGGER {table}_catalog_insert AFTER INSERT ON {table} {bump}")
        op.execute(f"CREATE TRIGGER {table}_catalog_delete AFTER DELETE ON {table} {bump}")
        op.execute(
            f"CREATE TRIGGER {table}_catalog_update AFTER UPDATE OF {', '.join(columns)} "
            f"ON {table} {bump}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER catalog_changed ON {table}")
        op.execute("DROP FUNCTION shipdeck_catalog_changed()")
    else:
        for table in WATCHED:
            for event in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER {table}_catalog_{event}")
    op.drop_table("catalog_version")
