"""The schema the migrations build is the one the models declare, on SQLite and PostgreSQL.

A model's new index or column without its migration works in the tests that create tables
from the models and is missing in every database upgraded in place (and the reverse).
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, MetaData, text

from core.db import Base
from core.migrate import upgrade
from runtimes.sandbox import SandboxBase


def test_the_migrations_build_the_models_schema(fresh: Engine) -> None:
    upgrade(fresh, "head")
    with fresh.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        models = MetaData()
        for metadata in (Base.metadata, SandboxBase.metadata):  # the two the migrations build
            for table in metadata.tables.values():
                table.to_metadata(models)
        drift = compare_metadata(context, models)
    assert drift == []


def test_the_freezes_index_holds_only_unlifted_freezes(fresh: Engine) -> None:
    upgrade(fresh, "head")
    with fresh.connect() as connection:
        if fresh.dialect.name == "sqlite":
            indexed = connection.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'ix_freezes_project_active'")
            ).scalar_one()
        else:
            indexed = connection.execute(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_freezes_project_active'"
                )
            ).scalar_one()
    assert "lifted_at IS NULL" in indexed and "project_id" in indexed
